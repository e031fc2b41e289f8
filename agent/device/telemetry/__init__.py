"""What the agent reports: metrics from the loop's histograms, health, and CloudWatch EMF lines."""
