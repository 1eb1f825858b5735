package local.ops.springdltcheck;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.Environment;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.messaging.handler.annotation.Header;
import org.springframework.util.backoff.FixedBackOff;

/**
 * A Spring {@code @KafkaListener} on a DLQ topic whose parameters are the dead-letter
 * headers, typed as Spring documents them: partition {@code int}, offset and timestamp
 * {@code long}, the rest {@code String}.
 *
 * <p>Spring binds them (see {@link SpringDltCheck}); a record it cannot bind (an ASCII
 * "3" is one byte, not the 4 an {@code int} needs) reaches the container's error handler,
 * which prints the error and skips the record with no retry.
 */
public class DeadLetterReader {

    /** One line per DLQ record, ordered by partition and offset: a binding or an error. */
    private final Map<String, Map<String, Object>> lines = new TreeMap<>();

    private final int expected;

    DeadLetterReader(int expected) {
        this.expected = expected;
    }

    static int run(Map<String, String> options) {
        System.setProperty("dlt.bootstrap", SpringDltCheck.required(options, "bootstrap"));
        System.setProperty("dlt.topic", SpringDltCheck.required(options, "topic"));
        System.setProperty("dlt.group", SpringDltCheck.required(options, "group"));
        System.setProperty("dlt.count", SpringDltCheck.required(options, "count"));
        long timeoutMs = Long.parseLong(options.getOrDefault("timeout-ms", "30000"));
        boolean complete;
        DeadLetterReader reader;
        try (AnnotationConfigApplicationContext context =
                new AnnotationConfigApplicationContext(ReaderConfig.class)) {
            reader = context.getBean(DeadLetterReader.class);
            complete = reader.await(timeoutMs);
        }
        synchronized (reader) {
            reader.lines.values().forEach(SpringDltCheck::print);
        }
        return complete ? 0 : 2;
    }

    @KafkaListener(id = "spring-dlt-check", topics = "${dlt.topic}", groupId = "${dlt.group}",
            properties = {"auto.offset.reset=earliest"})
    public void onDeadLetter(
            @Header(KafkaHeaders.RECEIVED_TOPIC) String dltTopic,
            @Header(KafkaHeaders.RECEIVED_PARTITION) int dltPartition,
            @Header(KafkaHeaders.OFFSET) long dltOffset,
            @Header(KafkaHeaders.DLT_ORIGINAL_TOPIC) String originalTopic,
            @Header(KafkaHeaders.DLT_ORIGINAL_PARTITION) int originalPartition,
            @Header(KafkaHeaders.DLT_ORIGINAL_OFFSET) long originalOffset,
            @Header(KafkaHeaders.DLT_ORIGINAL_TIMESTAMP) long originalTimestamp,
            @Header(name = KafkaHeaders.DLT_ORIGINAL_TIMESTAMP_TYPE, required = false)
            String originalTimestampType,
            @Header(name = KafkaHeaders.DLT_ORIGINAL_CONSUMER_GROUP, required = false)
            String originalConsumerGroup,
            @Header(KafkaHeaders.DLT_EXCEPTION_FQCN) String exceptionFqcn,
            @Header(name = KafkaHeaders.DLT_EXCEPTION_CAUSE_FQCN, required = false)
            String exceptionCauseFqcn,
            @Header(name = KafkaHeaders.DLT_EXCEPTION_MESSAGE, required = false)
            String exceptionMessage,
            @Header(name = KafkaHeaders.DLT_EXCEPTION_STACKTRACE, required = false)
            String exceptionStacktrace) {

        Map<String, Object> line = new LinkedHashMap<>();
        line.put("dlt_topic", dltTopic);
        line.put("dlt_partition", dltPartition);
        line.put("dlt_offset", dltOffset);
        line.put("original_topic", originalTopic);
        line.put("original_partition", originalPartition);
        line.put("original_offset", originalOffset);
        line.put("original_timestamp", originalTimestamp);
        line.put("original_timestamp_type", originalTimestampType);
        line.put("original_consumer_group", originalConsumerGroup);
        line.put("exception_fqcn", exceptionFqcn);
        line.put("exception_cause_fqcn", exceptionCauseFqcn);
        line.put("exception_message", exceptionMessage);
        line.put("exception_stacktrace", exceptionStacktrace);
        record(dltPartition, dltOffset, line);
    }

    void failed(ConsumerRecord<?, ?> record, Exception exception) {
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("dlt_topic", record.topic());
        line.put("dlt_partition", record.partition());
        line.put("dlt_offset", record.offset());
        StringBuilder why = new StringBuilder();
        for (Throwable t = exception; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (why.length() > 0) {
                why.append(" <- ");
            }
            why.append(t.getClass().getName()).append(": ").append(t.getMessage());
        }
        line.put("error", why.toString());
        record(record.partition(), record.offset(), line);
    }

    private synchronized void record(int partition, long offset, Map<String, Object> line) {
        this.lines.put(String.format("%06d:%020d", partition, offset), line);
        notifyAll();
    }

    private synchronized boolean await(long timeoutMs) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (this.lines.size() < this.expected) {
            long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            if (left <= 0) {
                return false;
            }
            try {
                wait(left);
            }
            catch (InterruptedException ex) {
                Thread.currentThread().interrupt();
                return false;
            }
        }
        return true;
    }

    /** The listener's Spring context: a consumer factory and a container factory, no Boot. */
    @Configuration
    @EnableKafka
    static class ReaderConfig {

        @Bean
        DeadLetterReader deadLetterReader(Environment env) {
            return new DeadLetterReader(Integer.parseInt(env.getRequiredProperty("dlt.count")));
        }

        @Bean
        ConsumerFactory<byte[], byte[]> consumerFactory(Environment env) {
            Map<String, Object> props = new LinkedHashMap<>();
            props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, env.getRequiredProperty("dlt.bootstrap"));
            props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            return new DefaultKafkaConsumerFactory<>(props);
        }

        @Bean
        ConcurrentKafkaListenerContainerFactory<byte[], byte[]> kafkaListenerContainerFactory(
                ConsumerFactory<byte[], byte[]> consumerFactory, DeadLetterReader reader) {
            ConcurrentKafkaListenerContainerFactory<byte[], byte[]> factory =
                    new ConcurrentKafkaListenerContainerFactory<>();
            factory.setConsumerFactory(consumerFactory);
            // No retry: a record Spring cannot bind is reported once and skipped.
            factory.setCommonErrorHandler(new DefaultErrorHandler(reader::failed, new FixedBackOff(0L, 0L)));
            return factory;
        }
    }
}
