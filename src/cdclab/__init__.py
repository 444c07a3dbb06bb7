"""cdclab: a lab for incremental processing and change data capture with Apache Airflow 3."""
