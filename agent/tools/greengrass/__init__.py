"""AWS IoT Greengrass v2 components of the edge inference agent.

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
  agent component and its model component (signed model packages) in the layout of the
  Greengrass Development Kit (:mod:`~agent.tools.greengrass.gdk`), ready for ``gdk component
  publish`` or a local ``greengrass-cli deployment create --recipeDir ... --artifactDir ...``;
  what it is asked to build: :mod:`~agent.tools.greengrass.component_options`; the recipes it
  fills in (artifact URIs and digests): :mod:`~agent.tools.greengrass.component_recipes`.
"""
