"""End-to-end demonstrations: an emulated fleet of Greengrass devices and a controller."""
