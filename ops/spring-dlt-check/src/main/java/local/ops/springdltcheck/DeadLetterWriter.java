package local.ops.springdltcheck;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.ListenerExecutionFailedException;

/**
 * One dead letter written by Spring's {@code DeadLetterPublishingRecoverer}, with its
 * default header names and encodings, for a record of the given coordinates (timestamp
 * type CreateTime) that failed in a listener of the given group, the way a
 * {@code DefaultErrorHandler} hands it over: a {@code ListenerExecutionFailedException}
 * carrying the group, caused by the listener's exception (an
 * {@code IllegalStateException} with the given message).
 */
final class DeadLetterWriter {

    private DeadLetterWriter() {
    }

    static int run(Map<String, String> options) {
        String dlt = SpringDltCheck.required(options, "topic");
        ConsumerRecord<byte[], byte[]> failed = new ConsumerRecord<>(
                SpringDltCheck.required(options, "source-topic"),
                Integer.parseInt(SpringDltCheck.required(options, "source-partition")),
                Long.parseLong(SpringDltCheck.required(options, "source-offset")),
                Long.parseLong(SpringDltCheck.required(options, "source-timestamp")),
                TimestampType.CREATE_TIME,
                -1,
                -1,
                options.getOrDefault("key", "K").getBytes(StandardCharsets.UTF_8),
                options.getOrDefault("value", "{}").getBytes(StandardCharsets.UTF_8),
                new RecordHeaders(),
                Optional.empty());
        Exception exception = new ListenerExecutionFailedException("Listener failed",
                SpringDltCheck.required(options, "group"),
                new IllegalStateException(SpringDltCheck.required(options, "message")));

        Map<String, Object> props = new LinkedHashMap<>();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, SpringDltCheck.required(options, "bootstrap"));
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        DefaultKafkaProducerFactory<byte[], byte[]> producers = new DefaultKafkaProducerFactory<>(props);
        try {
            KafkaTemplate<byte[], byte[]> template = new KafkaTemplate<>(producers);
            DeadLetterPublishingRecoverer recoverer = new DeadLetterPublishingRecoverer(template,
                    (record, ex) -> new TopicPartition(dlt, 0));
            // Waits for the broker's acknowledgement (failIfSendResultIsError, the default).
            recoverer.accept(failed, null, exception);
            template.flush();
        }
        finally {
            producers.destroy();
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("written", dlt);
        SpringDltCheck.print(line);
        return 0;
    }
}
