"""Log-based change data capture: events, exactly-once Kafka consumption, merges into the warehouse."""
