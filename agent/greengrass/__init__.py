"""AWS IoT Greengrass v2 components of the edge inference agent.

* The recipe format: :mod:`~agent.greengrass.recipe` (the typed recipe model, ``Recipe``,
  ``RecipeError``), :mod:`~agent.greengrass.recipe_variables` (how a recipe variable is
  written, JSON pointers, ``interpolate``), :mod:`~agent.greengrass.versions` (npm-style
  version ranges) and :mod:`~agent.greengrass.access_policy` (``accessControl``: which IPC
  operations a component may perform). The emulated nucleus builds on these.
* :mod:`~agent.greengrass.recipe_check`: checks a component recipe against the recipe
  reference and the nucleus's rules (``check_recipe``, ``check_recipe_file``); with
  :mod:`~agent.greengrass.variables` (the recipe variables checked) and
  :mod:`~agent.greengrass.agent_rules` (the agent's own settings and MQTT topics).
* :mod:`~agent.greengrass.component`: ``edge-agent package component``, which writes the
  agent component and its model component (signed model packages) in the layout of the
  Greengrass Development Kit (:mod:`~agent.greengrass.gdk`), ready for ``gdk component
  publish`` or a local ``greengrass-cli deployment create --recipeDir ... --artifactDir ...``;
  the recipes it fills in (artifact URIs and digests):
  :mod:`~agent.greengrass.component_recipes`.
"""
