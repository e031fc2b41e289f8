"""The local inference API: applications on the device send tensors and get predictions.

Front ends turn a request into numpy arrays and call the one
:class:`~agent.device.serving.service.InferenceService`, which queues it for the
inference thread (through the variants router, like the loop's own samples).

Modules and their public names:

- ``capture_params``: ``capture_ask``, ``from_parameters``, ``CAPTURE``, ``LABEL``, ``NOTE``
- ``config``: ``ServerConfig``
- ``http_messages``: ``HttpRequest``, ``HttpResponse``, ``read_request``, ``write_response``,
  ``close_lingering``, ``error_body``
- ``http_transport``: ``HttpServer``
- ``native_server``: ``NativeServer``
- ``native_transport``: ``FrameServer``
- ``oip_codec``: ``parse_infer_request``, ``decode_input``, ``encode_infer_response``,
  ``datatype_of``
- ``oip_app``: ``OipApp``, ``start_http_servers``
- ``oip_plans``: ``Placed``, ``ShmPlan``, ``response_head``, ``response_template``,
  ``PlanCache``, ``RequestRegions``
- ``regions``: ``Region``, ``RegionRegistry``
- ``service``: ``ServedModel``, ``InferenceResult``, ``InferenceService``
"""
