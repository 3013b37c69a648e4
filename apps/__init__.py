"""The applications built on the resnet-tf libraries: the ``resnet-tf``
command's top level (``apps.cli``), the export registry (``apps.export``)
and the demo (``apps.demo``).

Imports flow one way: ``apps -> localization -> detection -> resnet_tf``.
Nothing in the three libraries imports ``apps``; the import-linter contracts
in ``pyproject.toml`` (run by ``make test``) hold that. As detectron2 keeps
``tools/`` and ``demo/`` outside ``detectron2/``, the libraries here know
nothing of the command line that assembles them.
"""
