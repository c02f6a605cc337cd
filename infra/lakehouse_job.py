"""Entry point for spark-submit: the same `lakehouse` CLI jobs on a cluster.

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0,io.delta:delta-spark_4.2_2.13:4.4.0 \\
        --py-files lakehouse_utils.zip infra/lakehouse_job.py bronze --bootstrap HOST:9092 --topic crypto.trades \\
        --out /mnt/lake/bronze/crypto_trades --checkpoint /mnt/lake/checkpoints/kafka_to_bronze_trades

(`lakehouse_utils.zip`: `zip -r lakehouse_utils.zip lakehouse_utils`.)  Under spark-submit, `get_spark`
keeps the submitted master and configuration and adds no local jars.  Paths are filesystem paths
(local or a shared mount); object-store URIs (s3a://...) are not supported by Settings yet.
"""

import sys

from lakehouse_utils.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
