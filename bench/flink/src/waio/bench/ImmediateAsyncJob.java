package waio.bench;

import java.lang.management.ManagementFactory;
import java.util.Collections;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.async.AsyncFunction;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * The Flink side of scripts/bench-flink: the job of waio's "overhead" benchmark.
 *
 * <pre>
 *   DataGeneratorSource (N strings {"id":N,"text":"xxxxxxxx"}, as waio's generator with
 *   payload_bytes = 32) -> AsyncDataStream.unorderedWait(ImmediateFunction, capacity)
 *   -> DiscardingSink, parallelism 1, in the local MiniCluster of a plain `java -cp` run.
 * </pre>
 *
 * Usage: {@code java -cp JAR:FLINK_LIB/* waio.bench.ImmediateAsyncJob [records] [capacity]}
 *
 * <p>Prints lines {@code WAIO_BENCH key=value} on stdout for the script: epoch milliseconds of
 * the JVM start, of main(), of execute() and of the first and last record seen by the async
 * function, and System.nanoTime() of the first record, of record N/10 and of record N.
 */
public final class ImmediateAsyncJob {

    public static void main(String[] args) throws Exception {
        long mainMs = System.currentTimeMillis();
        long records = args.length > 0 ? Long.parseLong(args[0]) : 5_000_000L;
        int capacity = args.length > 1 ? Integer.parseInt(args[1]) : 100;
        report("jvm_start_ms", ManagementFactory.getRuntimeMXBean().getStartTime());
        report("main_ms", mainMs);
        report("records", records);
        report("capacity", capacity);
        report("max_heap_mib", Runtime.getRuntime().maxMemory() >> 20);
        report("processors", Runtime.getRuntime().availableProcessors());

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);

        DataGeneratorSource<String> source =
                new DataGeneratorSource<>(new Payloads(32), records, Types.STRING);
        DataStream<String> generated =
                env.fromSource(source, WatermarkStrategy.noWatermarks(), "generator");
        DataStream<String> echoed =
                AsyncDataStream.unorderedWait(
                        generated, new ImmediateFunction(records), 60, TimeUnit.SECONDS, capacity);
        echoed.sinkTo(new DiscardingSink<>());

        report("execute_ms", System.currentTimeMillis());
        env.execute("bench-immediate");
        report("finished_ms", System.currentTimeMillis());
    }

    static void report(String key, long value) {
        System.out.println("WAIO_BENCH " + key + "=" + value);
        System.out.flush();
    }

    /**
     * Records shaped like waio's generator: {@code {"id":N,"text":"..."}} with payloadBytes - 24
     * filler characters (ids count from 1, as in waio).
     */
    static final class Payloads implements GeneratorFunction<Long, String> {
        private final String prefix = "{\"id\":";
        private final String suffix;

        Payloads(int payloadBytes) {
            this.suffix = ",\"text\":\"" + "x".repeat(Math.max(0, payloadBytes - 24)) + "\"}";
        }

        @Override
        public String map(Long index) {
            // DataGeneratorSource counts from 0.
            return prefix + (index + 1) + suffix;
        }
    }

    /** Completes at once with its input; notes when it sees the first, the N/10th and the Nth. */
    static final class ImmediateFunction implements AsyncFunction<String, String> {
        private final long records;
        private final long tenth;
        private long seen;

        ImmediateFunction(long records) {
            this.records = records;
            this.tenth = Math.max(1, records / 10);
        }

        @Override
        public void asyncInvoke(String input, ResultFuture<String> resultFuture) {
            long n = ++seen;
            if (n == 1) {
                report("first_record_ms", System.currentTimeMillis());
                report("first_record_ns", System.nanoTime());
            }
            if (n == tenth) {
                report("tenth_record_ns", System.nanoTime());
            }
            if (n == records) {
                report("last_record_ns", System.nanoTime());
                report("last_record_ms", System.currentTimeMillis());
            }
            resultFuture.complete(Collections.singleton(input));
        }
    }
}
