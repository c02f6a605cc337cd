"""Speed and memory measurements (``make bench``, ``python -m lakehouse_utils.bench``): the top floor.

Imports: any floor of the package; nothing imports from here.
"""
