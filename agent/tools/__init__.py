"""Host and cloud tooling, never needed on a device (its dependencies come with extras).

Modules and their public names:

- ``bench``/
- ``boards``/: ``board_names``, ``board_root``
- ``brokers``/: ``BrokerError``, ``BrokerMissingError``
- ``capture``/
- ``demo``/
- ``fleet_sim``/
- ``greengrass``/
- ``importing``/
- ``nucleus``/: ``ComponentArtifactError``, ``ComponentState``, ``ComponentStore``,
  ``ComponentUpdate``, ``Deferral`` (+13)
- ``packaging``/
- ``s3``/
"""
