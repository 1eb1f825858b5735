package local.outbox.connect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;
import org.junit.jupiter.api.Test;

class ExplodeJsonHeaderTest {

  private static SourceRecord record(ConnectHeaders headers) {
    return new SourceRecord(
        Map.of(), Map.of(), "t", null, Schema.STRING_SCHEMA, "k", Schema.STRING_SCHEMA, "v",
        1L, headers);
  }

  private static ExplodeJsonHeader<SourceRecord> smt() {
    ExplodeJsonHeader<SourceRecord> smt = new ExplodeJsonHeader<>();
    smt.configure(Map.of("header", "x-outbox-headers"));
    return smt;
  }

  private static List<String> names(SourceRecord r) {
    List<String> out = new ArrayList<>();
    for (Header h : r.headers()) {
      out.add(h.key() + "=" + h.value());
    }
    return out;
  }

  @Test
  void spreadsEveryEntryInOrderAndDropsTheCarrier() {
    ConnectHeaders headers = new ConnectHeaders();
    headers.addString("id", "e1");
    headers.addString(
        "x-outbox-headers",
        "{\"event_id\": \"e1\", \"event_type\": \"SeatReserved\", \"schema_version\": \"1\","
            + " \"trace_id\": \"ab\", \"extra\": \"é\"}");
    SourceRecord out = smt().apply(record(headers));
    assertEquals(
        List.of(
            "id=e1",
            "event_id=e1",
            "event_type=SeatReserved",
            "schema_version=1",
            "trace_id=ab",
            "extra=é"),
        names(out));
    assertEquals("k", out.key());
    assertEquals("v", out.value());
    assertEquals("t", out.topic());
    assertEquals(Schema.STRING_SCHEMA, out.headers().lastWithName("extra").schema());
  }

  @Test
  void nonStringValuesBecomeTheirJsonTextAndNullStaysNull() {
    ConnectHeaders headers = new ConnectHeaders();
    headers.addString("x-outbox-headers", "{\"n\": 3, \"o\": {\"a\": [1]}, \"z\": null}");
    SourceRecord out = smt().apply(record(headers));
    assertEquals("3", out.headers().lastWithName("n").value());
    assertEquals("{\"a\":[1]}", out.headers().lastWithName("o").value());
    assertNull(out.headers().lastWithName("z").value());
    assertNull(out.headers().lastWithName("x-outbox-headers"));
  }

  @Test
  void aRecordWithoutTheCarrierPassesUnchanged() {
    SourceRecord in = record(new ConnectHeaders());
    assertSame(in, smt().apply(in));
  }

  @Test
  void anEmptyObjectOnlyRemovesTheCarrier() {
    ConnectHeaders headers = new ConnectHeaders();
    headers.addString("x-outbox-headers", "{}");
    assertEquals(List.of(), names(smt().apply(record(headers))));
  }

  @Test
  void aCarrierThatIsNotAJsonObjectFailsTheRecord() {
    for (String bad : new String[] {"[1, 2]", "not json", "\"s\""}) {
      ConnectHeaders headers = new ConnectHeaders();
      headers.addString("x-outbox-headers", bad);
      assertThrows(DataException.class, () -> smt().apply(record(headers)), bad);
    }
  }

  @Test
  void theHeaderOptionIsRequired() {
    assertThrows(
        org.apache.kafka.common.config.ConfigException.class,
        () -> new ExplodeJsonHeader<SourceRecord>().configure(Map.of()));
  }
}
