"""Greengrass v2 components: the recipe format, recipe checks, the component builder.

* The recipe format: :mod:`~agent.tools.greengrass.recipe` (the typed recipe model, ``Recipe``,
  ``RecipeError``), :mod:`~agent.tools.greengrass.interpolation` (how a recipe variable is
  written, JSON pointers, ``interpolate``), :mod:`~agent.tools.greengrass.versions` (npm-style
  version ranges) and :mod:`~agent.tools.greengrass.access_policy` (``accessControl``: which IPC
  operations a component may perform). The emulated nucleus builds on these.
* :mod:`~agent.tools.greengrass.recipe_check`: checks a component recipe against the recipe
  reference and the nucleus's rules (``check_recipe``, ``check_recipe_file``); with
  :mod:`~agent.tools.greengrass.variable_check` (the recipe variables checked) and
  :mod:`~agent.tools.greengrass.agent_rules` (the agent's own settings and MQTT topics).
* :mod:`~agent.tools.greengrass.component`: ``edge-agent package component``, which writes the
  agent component and its model component (``com.edgeinference.Model.<name>``, signed model
  packages) in the layout of the Greengrass Development Kit
  (:mod:`~agent.tools.greengrass.gdk`), ready for ``gdk component publish`` or a local
  ``greengrass-cli deployment create --recipeDir ... --artifactDir ...``; what it is asked to
  build: :mod:`~agent.tools.greengrass.component_options`; which model, versions,
  platforms and default backend (onnx for a model with only an ONNX export):
  :mod:`~agent.tools.greengrass.component_models`; the recipes it fills in (the
  model's name, the platforms' manifests, artifact URIs and digests, capture uploads to
  S3 with the token exchange service): :mod:`~agent.tools.greengrass.component_recipes`.

Modules and their public names:

- ``access_policy``: ``AccessDeniedError``, ``PolicyBody``, ``Grant``, ``AccessPolicy``,
  ``resource_pattern`` (+1)
- ``agent_rules``: ``up_channels``, ``agent_topics``, ``setting_names``, ``agent_problems``
- ``component``: ``DEFAULT_RECIPES``, ``FILE_URIS``, ``INSTALL_SCRIPT``,
  ``PLACEHOLDER_BASE``, ``ComponentOptions`` (+2)
- ``component_models``: ``PLATFORMS``, ``PLATFORM_OF_ARCH``, ``ONNX_PLATFORMS``,
  ``VersionBuilds``, ``ModelBuilds`` (+3)
- ``component_options``: ``MODEL_PREFIX``, ``MODEL_SLOT``, ``MODEL_TEMPLATE``,
  ``ComponentOptions``
- ``component_recipes``: ``copy_data``, ``fill_model_slot``, ``platform_manifests``,
  ``artifact_entry``, ``agent_recipe`` (+2)
- ``gdk``: ``version_key``, ``artifacts_dir``, ``write_recipe``, ``write_project``,
  ``local_deployment`` (+2)
- ``interpolation``: ``Variable``, ``find_variables``, ``substitute``, ``lookup_pointer``,
  ``configuration_text`` (+2)
- ``recipe``: ``RecipeError``, ``LifecycleStep``, ``Lifecycle``, ``Platform``,
  ``Permission`` (+7)
- ``recipe_check``: ``AGENT_COMPONENT``, ``REQUIRED_PLATFORMS``, ``Problem``,
  ``RecipeCheckError``, ``check_recipe`` (+2)
- ``variable_check``: ``key_path``, ``lifecycle_strings``, ``tree_strings``,
  ``lifecycle_problems``, ``configuration_problems`` (+1)
- ``versions``: ``Version``, ``parse_range``, ``satisfies``
"""
