package local.ops.springdltcheck;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import tools.jackson.databind.json.JsonMapper;

/**
 * Our dead letters as Spring Kafka sees them, and a dead letter as Spring writes it.
 *
 * <p>Used by {@code tests/events/test_spring_dead_letter_headers.py}; nothing here decodes a
 * header by hand: both directions run Spring Kafka's own code (spring-kafka 4.0.7, sources
 * at tag v4.0.7 of spring-projects/spring-kafka):
 *
 * <ul>
 *   <li>{@code read}: a real {@code @KafkaListener} ({@link DeadLetterReader}) subscribes to a
 *       DLQ topic and takes each {@code kafka_dlt-*} header as a typed {@code @Header}
 *       parameter. Spring maps the record's headers with {@code JsonKafkaHeaderMapper.toHeaders}
 *       (spring-kafka/src/main/java/org/springframework/kafka/support/JsonKafkaHeaderMapper.java,
 *       {@code AbstractKafkaHeaderMapper.headerValueToAddIn}: headers without JSON type info stay
 *       {@code byte[]}) and converts them for the method with the converters that
 *       {@code KafkaListenerAnnotationBeanPostProcessor} installs
 *       (spring-kafka/src/main/java/org/springframework/kafka/annotation/KafkaListenerAnnotationBeanPostProcessor.java:
 *       {@code BytesToNumberConverter}, {@code ByteBuffer.wrap(bytes).getInt()} for an
 *       {@code int} after asserting at least 4 bytes, {@code getLong()} for a {@code long}
 *       after asserting at least 8; {@code BytesToStringConverter}, UTF-8, for a
 *       {@code String}). Prints one JSON line per record, or per record Spring could not
 *       bind, the error.
 *   <li>{@code write}: Spring's {@code DeadLetterPublishingRecoverer}
 *       (spring-kafka/src/main/java/org/springframework/kafka/listener/DeadLetterPublishingRecoverer.java,
 *       {@code maybeAddOriginalHeaders} and {@code addExceptionInfoHeaders}) dead-letters a
 *       record of the given coordinates, failed with a {@code ListenerExecutionFailedException}
 *       of the given group, to a topic on the broker, so the test can compare its header bytes
 *       with ours.
 * </ul>
 *
 * <p>Usage:
 *
 * <pre>
 *   read  --bootstrap H:P --topic DLT --group G --count N [--timeout-ms MS]
 *   write --bootstrap H:P --topic DLT --source-topic T --source-partition P --source-offset O
 *         --source-timestamp MS --group G --message TEXT [--key K] [--value V]
 * </pre>
 *
 * <p>Exit status: 0 done; 1 bad usage or a failure; 2 fewer than {@code --count} records
 * arrived in time (those that did are printed).
 */
public final class SpringDltCheck {

    static final JsonMapper JSON = JsonMapper.builder().build();

    private SpringDltCheck() {
    }

    public static void main(String[] args) {
        // Before any logger exists: kafka-clients' INFO chatter off, warnings kept.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        int status;
        try {
            if (args.length == 0) {
                throw new IllegalArgumentException("a mode is needed: read or write");
            }
            Map<String, String> options = options(List.of(args).subList(1, args.length));
            status = switch (args[0]) {
                case "read" -> DeadLetterReader.run(options);
                case "write" -> DeadLetterWriter.run(options);
                default -> throw new IllegalArgumentException("unknown mode " + args[0]);
            };
        }
        catch (IllegalArgumentException ex) {
            System.err.println("spring-dlt-check: " + ex.getMessage());
            status = 1;
        }
        System.out.flush();
        // Spring's and Kafka's non-daemon threads are closed by now; exit regardless.
        System.exit(status);
    }

    static void print(Map<String, Object> line) {
        System.out.println(JSON.writeValueAsString(line));
    }

    static String required(Map<String, String> options, String name) {
        String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is needed");
        }
        return value;
    }

    private static Map<String, String> options(List<String> args) {
        Map<String, String> out = new LinkedHashMap<>();
        for (int i = 0; i < args.size(); i += 2) {
            String name = args.get(i);
            if (!name.startsWith("--") || i + 1 >= args.size()) {
                throw new IllegalArgumentException("expected --name value, got " + name);
            }
            out.put(name.substring(2), args.get(i + 1));
        }
        return out;
    }
}
