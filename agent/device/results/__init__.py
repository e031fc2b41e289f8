"""Result streams: the loop's (and, when asked, the API's) predictions published to
applications on Greengrass local pub/sub, to AWS IoT Core through the spool, and to a
shared-memory ring, under a publishing policy that keeps a camera from flooding MQTT.

The inference thread only hands each inference's outputs off
(:mod:`~agent.device.results.handoff`); the publisher thread applies the policy, ranks,
encodes (the schema of :mod:`agent.wire.results`) and publishes.

Modules and their public names:

- ``build``: ``ShmSink``, ``build_stream``
- ``config``: ``PolicyConfig``, ``ResultsConfig``, ``resolve_topic``
- ``handoff``: ``Handoff``, ``FrameHook``
- ``iot``: ``IotSink``
- ``local_pubsub``: ``LocalPubSubSink``
- ``policy``: ``PolicyCounts``, ``PublishPolicy``
- ``shm_ring``: ``ResultRingWriter``, ``ResultRingReader``, ``RingResult``, ``RingOutput``
- ``stream``: ``Sink``, ``ResultStream``
"""
