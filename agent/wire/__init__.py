"""The device-cloud contract: topics, messages, commands, codec, signing, MQTT transport.

Modules and their public names:

- ``canonical``: ``canonical_json``
- ``codec``: ``encode``, ``decode``
- ``commands``: ``Target``, ``Weights``, ``StageArgs``, ``ShadowArgs``, ``SetWeightsArgs``
  (+13)
- ``errors``: ``ProtocolError``, ``DecodeError``, ``MalformedMessageError``,
  ``OversizedMessageError``, ``UnsupportedVersionError`` (+11)
- ``examples``: ``example_up_messages``, ``example_commands``
- ``fields``: ``Schema``, ``new_message_id``
- ``gate``: ``CommandGate``, ``rejection``
- ``inference_frame_extensions``: ``EXT_CAPTURE``, ``encode_extension``, ``read_extensions``,
  ``encode_capture_ask``, ``decode_capture_ask`` (+1)
- ``inference_frame_io``: ``FrameReader``, ``send_frame``
- ``inference_frames``: ``Kind``, ``Frame``, ``TensorDesc``, ``InferHeader``, ``ResultHeader``
  (+15)
- ``keys``: ``KeyPair``, ``check_key_id``, ``generate_keypair``, ``public_key_b64``,
  ``load_private_key`` (+5)
- ``memory``: ``MemoryBroker``, ``MemoryTransport``
- ``messages``: ``UpMessage``, ``ProfileInfo``, ``Register``, ``Heartbeat``, ``Buckets``
  (+8)
- ``mqtt``: ``MqttTransport``, ``is_permanent``
- ``mqtt_config``: ``MqttConfig``, ``broker_address``, ``build_connection``
- ``replay``: ``ReplayGuard``
- ``results``: ``Result``, ``ResultCounts``, ``RankedClass``, ``Frame``, ``RawOutput`` (+1)
- ``senders``: ``SenderState``, ``SenderTracker``
- ``sequence``: ``SequenceCounter``, ``new_boot_id``, ``read_reserved``, ``write_reserved``
- ``shm_ring``: ``shm_path``, ``ShmRing``, ``RingInput``, ``layout``, ``ring_size``,
  ``check_ring_name``
- ``signing``: ``Signer``, ``TrustStore``, ``signed_bytes``
- ``stamp``: ``Stamper``
- ``topics``: ``Topics``, ``check_name``, ``group_commands_topic``, ``command_filters``,
  ``device_topics_filter`` (+5)
- ``transport``: ``TransportError``, ``TransportConfigError``, ``Transport``
"""
