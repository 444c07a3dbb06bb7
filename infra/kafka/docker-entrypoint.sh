#!/usr/bin/env bash
# cdclab/kafka and cdclab/connect entrypoint: the shared properties file of infra/kafka plus the
# container's overrides (CDCLAB_OVERRIDES, one key=value a line; later keys win), as the native
# launcher's render_properties() does, then the JVM with the native launcher's heap and log4j2 file.
#   kafka    formats the KRaft storage on first start, then runs broker + controller
#   connect  runs Kafka Connect in distributed mode (plugin.path = the image's Debezium plugins)
set -euo pipefail
role=${1:-kafka}
conf=$CDCLAB_KAFKA_DIR
render() {  # $1: shared file, $2: rendered file
  { cat "$1"; printf '\n# ---- container overrides ----\n%s\n' "${CDCLAB_OVERRIDES:-}"; } > "$2"
}
java_cmd=(java -XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$conf/log4j2.properties"
          -cp '/opt/kafka/libs/*')
case "$role" in
  kafka)
    props=/var/lib/kafka/server.properties
    render "$conf/server.properties" "$props"
    if [ ! -f /var/lib/kafka/data/meta.properties ]; then
      echo "cdclab/kafka: formatting the KRaft storage"
      "${java_cmd[@]}" -Xmx256m kafka.tools.StorageTool format --standalone \
        -t "${KAFKA_CLUSTER_ID:-Y2RjbGFiLWtyYWZ0LTAwMQ}" -c "$props"
    fi
    exec "${java_cmd[@]}" -Xmx768m -Xms128m kafka.Kafka "$props" ;;
  connect)
    props=/var/lib/kafka/connect-distributed.properties
    CDCLAB_OVERRIDES="plugin.path=/opt/connect/plugins
${CDCLAB_OVERRIDES:-}" render "$conf/connect-distributed.properties" "$props"
    exec "${java_cmd[@]}" -Xmx1g -Xms128m org.apache.kafka.connect.cli.ConnectDistributed "$props" ;;
  *) exec "$@" ;;
esac
