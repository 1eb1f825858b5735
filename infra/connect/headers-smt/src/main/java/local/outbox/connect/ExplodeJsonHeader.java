package local.outbox.connect;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.Map;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.ConnectRecord;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.header.Headers;
import org.apache.kafka.connect.transforms.Transformation;

/**
 * Turns one header that holds a JSON object into one string header per entry, and drops it.
 *
 * <p>Debezium's Outbox Event Router can place a column in a header but cannot spread a JSON
 * column over several headers. The outbox's {@code headers} column (a jsonb object of header
 * name to string) is placed in the carrier header {@code header} by the router; this
 * transformation adds each entry as a header of its own, in the object's order, with string
 * values (non-string JSON values are added as their JSON text, a JSON null as a null header),
 * and removes the carrier. A record without the carrier (e.g. a Debezium heartbeat) passes
 * unchanged. A carrier that is not a JSON object fails the record with a DataException:
 * the task stops rather than send an event without the headers its consumers need.
 */
public class ExplodeJsonHeader<R extends ConnectRecord<R>> implements Transformation<R> {

  public static final String HEADER_CONFIG = "header";

  public static final ConfigDef CONFIG_DEF =
      new ConfigDef()
          .define(
              HEADER_CONFIG,
              ConfigDef.Type.STRING,
              ConfigDef.NO_DEFAULT_VALUE,
              new ConfigDef.NonEmptyString(),
              ConfigDef.Importance.HIGH,
              "The header that holds the JSON object to spread into headers (removed after).");

  private static final ObjectMapper JSON = new ObjectMapper();

  private String carrier;

  @Override
  public void configure(Map<String, ?> props) {
    carrier = new AbstractConfig(CONFIG_DEF, props).getString(HEADER_CONFIG);
  }

  @Override
  public R apply(R record) {
    Header found = record.headers().lastWithName(carrier);
    if (found == null) {
      return record;
    }
    Headers headers = record.headers().duplicate();
    headers.remove(carrier);
    JsonNode object = parse(found.value());
    Iterator<Map.Entry<String, JsonNode>> fields = object.fields();
    while (fields.hasNext()) {
      Map.Entry<String, JsonNode> field = fields.next();
      JsonNode value = field.getValue();
      if (value.isNull()) {
        headers.addString(field.getKey(), null);
      } else {
        headers.addString(field.getKey(), value.isTextual() ? value.textValue() : value.toString());
      }
    }
    return record.newRecord(
        record.topic(),
        record.kafkaPartition(),
        record.keySchema(),
        record.key(),
        record.valueSchema(),
        record.value(),
        record.timestamp(),
        headers);
  }

  private JsonNode parse(Object value) {
    String text;
    if (value instanceof String s) {
      text = s;
    } else if (value instanceof byte[] bytes) {
      text = new String(bytes, StandardCharsets.UTF_8);
    } else if (value == null) {
      throw new DataException("header " + carrier + " is null; expected a JSON object");
    } else {
      throw new DataException(
          "header " + carrier + " holds a " + value.getClass().getName() + "; expected JSON text");
    }
    JsonNode node;
    try {
      node = JSON.readTree(text);
    } catch (Exception e) {
      throw new DataException("header " + carrier + " is not valid JSON: " + e.getMessage(), e);
    }
    if (node == null || !node.isObject()) {
      throw new DataException("header " + carrier + " is not a JSON object: " + text);
    }
    return node;
  }

  @Override
  public ConfigDef config() {
    return CONFIG_DEF;
  }

  @Override
  public void close() {}
}
