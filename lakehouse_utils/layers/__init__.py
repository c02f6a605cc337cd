"""The streaming jobs along the data's path, Kafka -> Bronze -> Silver -> Gold (``bronze``, ``silver``,
``gold`` with ``gold_tables`` and ``gold_writer``, or all three in one query: ``pipeline``), and what they share
(``streaming``, ``delta_io``, ``bars``, ``jobs``).

Imports: ``engine``, ``kafka``, ``sources`` and the top-level modules; never the views or the commands.
"""
