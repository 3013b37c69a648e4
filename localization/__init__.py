"""The paper's ILSVRC localization: a per-class RPN (Appendix C).

Planned (issue "Localization"); it will reuse ``detection``'s anchors, box
coder and matcher. Nothing is implemented here yet.
"""
