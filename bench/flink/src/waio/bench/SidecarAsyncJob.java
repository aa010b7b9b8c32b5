package waio.bench;

import java.lang.management.ManagementFactory;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Collection;
import java.util.Collections;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import io.waio.flink.WaioAsyncFunction;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RuntimeContext;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ArrayNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.async.CollectionSupplier;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.async.RichAsyncFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * The Flink side of scripts/bench-flink-serve: the same job with three async functions.
 *
 * <pre>
 *   DataGeneratorSource (N strings {"id":N,"text":"xxxxxxxx"}, as ImmediateAsyncJob)
 *   -> AsyncDataStream.unorderedWait(FUNCTION, timeout, capacity C) -> DiscardingSink,
 *   parallelism P (default 1), in the local MiniCluster of a plain `java -cp` run.
 * </pre>
 *
 * FUNCTION is, by MODE:
 *
 * <ul>
 *   <li>{@code immediate}: a plain Java function that completes at once with its input (the
 *       baseline of the immediate-completion case);
 *   <li>{@code waio}: {@code io.waio.flink.WaioAsyncFunction} posting batches to a {@code waio
 *       serve} sidecar ({@code --sidecar URL}, {@code --batch B}, {@code --linger-ms L},
 *       builder capacity = C);
 *   <li>{@code http}: a plain Java function that sends each record to an OpenAI-compatible
 *       {@code /v1/chat/completions} ({@code --mock URL}) with java.net.http.HttpClient
 *       (HTTP/1.1, sendAsync), the request the openai plugin of bench/flink/serve-http.toml
 *       sends, and completes the record with the answer's text as its {@code label}: the direct
 *       baseline of the HTTP-bound case.
 * </ul>
 *
 * Usage: {@code java -cp JAR:FLINK_LIB/* waio.bench.SidecarAsyncJob MODE RECORDS [--capacity C]
 * [--batch B] [--linger-ms L] [--parallelism P] [--timeout-s T] [--sidecar URL] [--mock URL]}
 *
 * <p>Prints {@code WAIO_BENCH key=value} lines on stdout like ImmediateAsyncJob: epoch ms of the
 * JVM start, main(), execute(), the first record the function sees and the last record completed,
 * execute()'s return; System.nanoTime() of the first record seen and of the N/10th and Nth record
 * <em>completed</em> (for {@code immediate} the same as seen). Steady records/s = (N - N/10) /
 * (t(N done) - t(N/10 done)). The JVM's process CPU time is noted at the first record seen and at
 * the N/10th and Nth completed, so that the script can tell the steady CPU per record from the
 * start-up's. The counters are static: with parallelism P they add up the
 * subtasks of this one JVM (the MiniCluster), which is all this benchmark runs.
 */
public final class SidecarAsyncJob {

    static final AtomicLong SEEN = new AtomicLong();
    static final AtomicLong DONE = new AtomicLong();
    static final AtomicLong FAILED = new AtomicLong();

    public static void main(String[] args) throws Exception {
        long mainMs = System.currentTimeMillis();
        if (args.length < 2) {
            System.err.println("usage: SidecarAsyncJob immediate|waio|http RECORDS [--capacity C] [--batch B]"
                    + " [--linger-ms L] [--parallelism P] [--timeout-s T] [--sidecar URL] [--mock URL]");
            System.exit(2);
        }
        String mode = args[0];
        long records = Long.parseLong(args[1]);
        int capacity = 100;
        int batch = 50;
        int lingerMs = 5;
        int parallelism = 1;
        int timeoutS = 600;
        String sidecar = "http://127.0.0.1:8700";
        String mock = "http://127.0.0.1:18087";
        for (int i = 2; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(args[i] + " needs a value");
            }
            String v = args[i + 1];
            switch (args[i]) {
                case "--capacity": capacity = Integer.parseInt(v); break;
                case "--batch": batch = Integer.parseInt(v); break;
                case "--linger-ms": lingerMs = Integer.parseInt(v); break;
                case "--parallelism": parallelism = Integer.parseInt(v); break;
                case "--timeout-s": timeoutS = Integer.parseInt(v); break;
                case "--sidecar": sidecar = v; break;
                case "--mock": mock = v; break;
                default: throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        ImmediateAsyncJob.report("jvm_start_ms", ManagementFactory.getRuntimeMXBean().getStartTime());
        ImmediateAsyncJob.report("main_ms", mainMs);
        ImmediateAsyncJob.report("records", records);
        ImmediateAsyncJob.report("capacity", capacity);
        ImmediateAsyncJob.report("parallelism", parallelism);
        ImmediateAsyncJob.report("max_heap_mib", Runtime.getRuntime().maxMemory() >> 20);
        ImmediateAsyncJob.report("processors", Runtime.getRuntime().availableProcessors());

        RichAsyncFunction<String, String> function;
        switch (mode) {
            case "immediate":
                function = new Immediate();
                break;
            case "waio":
                function = waio(sidecar, batch, lingerMs, capacity);
                ImmediateAsyncJob.report("batch", batch);
                ImmediateAsyncJob.report("linger_ms", lingerMs);
                break;
            case "http":
                function = new DirectHttp(mock + "/v1/chat/completions");
                break;
            default:
                throw new IllegalArgumentException("mode must be immediate, waio or http, not " + mode);
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(parallelism);
        DataGeneratorSource<String> source =
                new DataGeneratorSource<>(new ImmediateAsyncJob.Payloads(32), records, Types.STRING);
        DataStream<String> generated =
                env.fromSource(source, WatermarkStrategy.noWatermarks(), "generator");
        DataStream<String> out = AsyncDataStream.unorderedWait(
                generated, new Timed(function, records), timeoutS, TimeUnit.SECONDS, capacity);
        out.sinkTo(new DiscardingSink<>());

        ImmediateAsyncJob.report("execute_ms", System.currentTimeMillis());
        env.execute("bench-" + mode);
        ImmediateAsyncJob.report("finished_ms", System.currentTimeMillis());
        ImmediateAsyncJob.report("completed", DONE.get());
        ImmediateAsyncJob.report("failed", FAILED.get());
    }

    /** The JVM's CPU time so far (all threads, user + system), in nanoseconds. */
    static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    static RichAsyncFunction<String, String> waio(String url, int batch, int lingerMs, int capacity) {
        return WaioAsyncFunction.builder(url)
                .batchSize(batch)
                .linger(Duration.ofMillis(lingerMs))
                .capacity(capacity)
                .caller("bench")
                .build();
    }

    /**
     * Wraps the function under test: notes the first record it is handed, and the N/10th and Nth
     * record completed (the ResultFuture it passes on counts completions, on whichever thread).
     */
    static final class Timed extends RichAsyncFunction<String, String> {
        private static final long serialVersionUID = 1L;
        private final RichAsyncFunction<String, String> inner;
        private final long records;
        private final long tenth;

        Timed(RichAsyncFunction<String, String> inner, long records) {
            this.inner = inner;
            this.records = records;
            this.tenth = Math.max(1, records / 10);
        }

        @Override
        public void setRuntimeContext(RuntimeContext context) {
            super.setRuntimeContext(context);
            inner.setRuntimeContext(context);
        }

        @Override
        public void open(OpenContext openContext) throws Exception {
            inner.open(openContext);
        }

        @Override
        public void close() throws Exception {
            inner.close();
        }

        @Override
        public void asyncInvoke(String input, ResultFuture<String> resultFuture) throws Exception {
            if (SEEN.incrementAndGet() == 1) {
                ImmediateAsyncJob.report("first_record_ms", System.currentTimeMillis());
                ImmediateAsyncJob.report("first_record_ns", System.nanoTime());
                ImmediateAsyncJob.report("first_record_cpu_ns", processCpuNanos());
            }
            inner.asyncInvoke(input, new Counted(resultFuture));
        }

        void done() {
            long n = DONE.incrementAndGet();
            if (n == tenth) {
                ImmediateAsyncJob.report("tenth_record_ns", System.nanoTime());
                ImmediateAsyncJob.report("tenth_record_cpu_ns", processCpuNanos());
            }
            if (n == records) {
                ImmediateAsyncJob.report("last_record_ns", System.nanoTime());
                ImmediateAsyncJob.report("last_record_ms", System.currentTimeMillis());
                ImmediateAsyncJob.report("last_record_cpu_ns", processCpuNanos());
            }
        }

        final class Counted implements ResultFuture<String> {
            private final ResultFuture<String> to;

            Counted(ResultFuture<String> to) {
                this.to = to;
            }

            @Override
            public void complete(Collection<String> result) {
                done();
                to.complete(result);
            }

            @Override
            public void complete(CollectionSupplier<String> supplier) {
                done();
                to.complete(supplier);
            }

            @Override
            public void completeExceptionally(Throwable error) {
                if (FAILED.incrementAndGet() == 1) {
                    System.err.println("WAIO_BENCH first failure: " + error);
                }
                done();
                to.completeExceptionally(error);
            }
        }
    }

    /** Completes at once with its input. */
    static final class Immediate extends RichAsyncFunction<String, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public void asyncInvoke(String input, ResultFuture<String> resultFuture) {
            resultFuture.complete(Collections.singleton(input));
        }
    }

    /**
     * One chat completion per record, straight to the provider: the body the openai plugin sends
     * for bench/flink/serve-http.toml's operator (max_tokens 3, the triage system prompt, the
     * record's text as the user message, model mock-small, temperature 0), with its
     * Authorization header; the answer's text goes into the record as {@code label}.
     */
    static final class DirectHttp extends RichAsyncFunction<String, String> {
        private static final long serialVersionUID = 1L;
        static final String SYSTEM_PROMPT =
                "You triage customer support tickets. Answer with exactly one label and nothing else.\n"
                + "urgent: outage, data loss or a security problem. billing: charges, invoices, refunds, plans.\n"
                + "bug: something works incorrectly. other: everything else.\n"
                + "Labels: urgent, billing, bug, other";
        private final String url;
        private transient URI endpoint;
        private transient ObjectMapper json;
        private transient ExecutorService threads;
        private transient HttpClient client;

        DirectHttp(String url) {
            this.url = url;
        }

        @Override
        public void open(OpenContext openContext) {
            endpoint = URI.create(url);
            json = new ObjectMapper();
            AtomicInteger count = new AtomicInteger();
            // As WaioAsyncFunction does: one client, its own daemon threads, HTTP/1.1 keep-alive.
            threads = Executors.newCachedThreadPool(runnable -> {
                Thread thread = new Thread(runnable, "direct-http-" + count.incrementAndGet());
                thread.setDaemon(true);
                return thread;
            });
            client = HttpClient.newBuilder()
                    .version(HttpClient.Version.HTTP_1_1)
                    .connectTimeout(Duration.ofSeconds(5))
                    .executor(threads)
                    .build();
        }

        @Override
        public void close() {
            if (threads != null) {
                threads.shutdownNow();
            }
        }

        @Override
        public void asyncInvoke(String input, ResultFuture<String> resultFuture) throws Exception {
            ObjectNode record = (ObjectNode) json.readTree(input);
            ObjectNode body = json.createObjectNode();
            body.put("max_tokens", 3);
            ArrayNode messages = body.putArray("messages");
            messages.addObject().put("content", SYSTEM_PROMPT).put("role", "system");
            messages.addObject().put("content", record.path("text").asText()).put("role", "user");
            body.put("model", "mock-small");
            body.put("temperature", 0.0);
            HttpRequest request = HttpRequest.newBuilder(endpoint)
                    .version(HttpClient.Version.HTTP_1_1)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json")
                    .header("Authorization", "Bearer sk-demo-not-a-real-key")
                    .POST(HttpRequest.BodyPublishers.ofByteArray(json.writeValueAsBytes(body)))
                    .build();
            client.sendAsync(request, HttpResponse.BodyHandlers.ofByteArray()).whenComplete((response, error) -> {
                try {
                    if (error != null) {
                        resultFuture.completeExceptionally(error);
                    } else if (response.statusCode() != 200) {
                        resultFuture.completeExceptionally(new RuntimeException(
                                "HTTP " + response.statusCode() + " from " + endpoint));
                    } else {
                        JsonNode answer = json.readTree(response.body());
                        record.put("label", answer.path("choices").path(0).path("message").path("content").asText());
                        resultFuture.complete(Collections.singleton(json.writeValueAsString(record)));
                    }
                } catch (Exception e) {
                    resultFuture.completeExceptionally(e);
                }
            });
        }
    }
}
