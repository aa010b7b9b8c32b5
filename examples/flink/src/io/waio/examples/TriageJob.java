package io.waio.examples;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import io.waio.flink.FatalMode;
import io.waio.flink.WaioAsyncFunction;
import io.waio.flink.WaioRetries;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.Path;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.sink.filesystem.OutputFileConfig;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.BasePathBucketAssigner;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.OnCheckpointRollingPolicy;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The quickstart's ticket triage as a Flink job, the operators run by a waio sidecar
 * ({@code waio serve examples/flink/serve.toml}):
 *
 * <pre>
 *   FileSource (JSON lines) -> rebalance -> AsyncDataStream.unorderedWaitWithRetry(WaioAsyncFunction)
 *   -> split: enriched tickets -> FileSink OUTPUT/, waio_error outputs -> FileSink OUTPUT/dead-letters/
 * </pre>
 *
 * Exactly once: checkpoints every --checkpoint-interval ms; the FileSink publishes its part files
 * at each checkpoint (and at the end of the input). Run with --help for the options.
 */
public final class TriageJob {
    private static final Set<String> OPTIONS = Set.of(
            "input", "output", "sidecar", "parallelism", "checkpoint-interval", "batch", "linger-ms",
            "capacity", "timeout-ms", "retries", "fatal");
    private static final String USAGE = String.join("\n",
            "usage: TriageJob --input PATH --output DIR [options]",
            "  --input PATH               tickets, one JSON object per line (a file or a directory)",
            "  --output DIR               enriched tickets; failed ones (--fatal output) in DIR/dead-letters",
            "  --sidecar URL              waio serve's address (default http://127.0.0.1:8700)",
            "  --parallelism N            (default 4)",
            "  --checkpoint-interval MS   exactly-once checkpoints (default 1000)",
            "  --batch N                  records per request to the sidecar (default 50)",
            "  --linger-ms N              how long a batch waits to fill (default 5)",
            "  --capacity N               records in flight per subtask (default 100)",
            "  --timeout-ms N             per record, retries included (default 60000)",
            "  --retries N                retries of a retriable failure (default 20)",
            "  --fatal fail|output        a fatal record fails the job, or goes to the dead letters (default fail)");

    /** Tags the failed records that {@code --fatal output} turns into outputs. */
    private static final OutputTag<String> DEAD_LETTERS = new OutputTag<>("waio-errors", Types.STRING);

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        String input = required(opts, "input");
        String output = required(opts, "output");
        String sidecar = opts.getOrDefault("sidecar", "http://127.0.0.1:8700");
        int parallelism = number(opts, "parallelism", 4);
        int checkpointInterval = number(opts, "checkpoint-interval", 1000);
        int capacity = number(opts, "capacity", 100);
        int timeoutMs = number(opts, "timeout-ms", 60000);
        int retries = number(opts, "retries", 20);
        FatalMode fatal = FatalMode.valueOf(opts.getOrDefault("fatal", "fail").toUpperCase());

        // Transient failures (a TaskManager lost, the sidecar restarting, retries exhausted) restart
        // the job from its last checkpoint; a WaioFatalException is non-recoverable and ends it.
        Configuration conf = new Configuration();
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
        conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, 1000);
        conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofSeconds(1));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(parallelism);
        env.enableCheckpointing(checkpointInterval, CheckpointingMode.EXACTLY_ONCE);

        FileSource<String> source =
                FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(input)).build();
        // One file is one split, read by one subtask: rebalance spreads the tickets over all of
        // the async operator's subtasks.
        DataStream<String> tickets = env.fromSource(source, WatermarkStrategy.noWatermarks(), "tickets")
                .filter(line -> !line.isBlank())
                .name("non-blank lines")
                .rebalance();

        WaioAsyncFunction triage = WaioAsyncFunction.builder(sidecar)
                .batchSize(number(opts, "batch", 50))
                .linger(Duration.ofMillis(number(opts, "linger-ms", 5)))
                .capacity(capacity) // the same as AsyncDataStream's, below
                .fatalAs(fatal)
                .build();
        DataStream<String> answers = AsyncDataStream.unorderedWaitWithRetry(
                        tickets, triage, timeoutMs, TimeUnit.MILLISECONDS, capacity,
                        WaioRetries.strategy(retries, Duration.ofMillis(100), Duration.ofSeconds(2)))
                .name("waio triage")
                .uid("waio-triage");

        SingleOutputStreamOperator<String> enriched = answers
                .process(new SplitErrors())
                .name("split waio errors");
        enriched.sinkTo(sink(output, "triage")).name("enriched tickets").uid("enriched-sink");
        enriched.getSideOutput(DEAD_LETTERS)
                .sinkTo(sink(output + "/dead-letters", "dead-letters"))
                .name("dead letters")
                .uid("dead-letter-sink");

        JobExecutionResult result = env.execute("waio triage");
        // `flink run -d` returns at submission: there is no result to report yet.
        if (result.isJobExecutionResult()) {
            System.out.println("waio triage: done in " + result.getNetRuntime(TimeUnit.MILLISECONDS)
                    + " ms; enriched tickets in " + output);
        }
    }

    /** Part files published at each checkpoint, straight in DIR (no date buckets). */
    private static FileSink<String> sink(String dir, String prefix) {
        return FileSink.forRowFormat(new Path(dir), new SimpleStringEncoder<String>("UTF-8"))
                .withBucketAssigner(new BasePathBucketAssigner<>())
                .withRollingPolicy(OnCheckpointRollingPolicy.build())
                .withOutputFileConfig(
                        OutputFileConfig.builder().withPartPrefix(prefix).withPartSuffix(".jsonl").build())
                .build();
    }

    /** Passes enriched tickets on; sends the {"waio_error":..} outputs to the dead letters. */
    private static final class SplitErrors extends ProcessFunction<String, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public void processElement(String value, Context ctx, Collector<String> out) {
            if (WaioAsyncFunction.isErrorOutput(value)) {
                ctx.output(DEAD_LETTERS, value);
            } else {
                out.collect(value);
            }
        }
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String name = args[i].startsWith("--") ? args[i].substring(2) : "";
            if (name.equals("help")) {
                System.out.println(USAGE);
                System.exit(0);
            }
            if (!OPTIONS.contains(name) || i + 1 == args.length) {
                throw new IllegalArgumentException(
                        (OPTIONS.contains(name) ? "no value for " : "unknown option ") + args[i] + "\n" + USAGE);
            }
            opts.put(name, args[++i]);
        }
        return opts;
    }

    private static String required(Map<String, String> opts, String name) {
        String value = opts.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required\n" + USAGE);
        }
        return value;
    }

    private static int number(Map<String, String> opts, String name, int otherwise) {
        String value = opts.get(name);
        return value == null ? otherwise : Integer.parseInt(value);
    }
}
