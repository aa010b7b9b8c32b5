package io.waio.flink;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.async.RichAsyncFunction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Flink's async I/O with the work done by a waio sidecar ({@code waio serve}): each record (a JSON
 * string) goes to the sidecar's operators and comes back as zero or more JSON strings.
 *
 * <pre>{@code
 * WaioAsyncFunction fn = WaioAsyncFunction.builder("http://127.0.0.1:8700")
 *         .batchSize(50).linger(Duration.ofMillis(5)).capacity(100).build();
 * AsyncDataStream.unorderedWaitWithRetry(stream, fn, 60, TimeUnit.SECONDS, 100,
 *         WaioRetries.strategy(20, Duration.ofMillis(100), Duration.ofSeconds(2)));
 * }</pre>
 *
 * <p>Records are sent in batches, one {@code POST /v1/invoke} each, and each record is completed
 * as soon as its answer line arrives. A batch leaves when it holds {@code batchSize} records,
 * when every capacity slot is taken (records buffered + in flight = {@code capacity}), or
 * {@code linger} after its first record. {@code capacity} must be the capacity given to
 * {@code AsyncDataStream}: with a larger one, Flink stops handing records over while a half batch
 * waits for its linger timer.
 */
public final class WaioAsyncFunction extends RichAsyncFunction<String, String> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(WaioAsyncFunction.class);
    private static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(5);

    private final URI endpoint;
    private final int batchSize;
    private final Duration linger;
    private final int capacity;
    private final String callerName;
    private final FatalMode fatalMode;
    private final Duration requestTimeout;

    // Runtime state, made in open(). The batch being filled is guarded by `lock`.
    private transient Object lock;
    private transient List<String> inputs;
    private transient List<ResultFuture<String>> futures;
    private transient long batchNumber;
    private transient ScheduledFuture<?> lingerTimer;
    /** Records sent and not completed yet. */
    private transient AtomicInteger inFlight;
    private transient Set<WaioBatch> sent;
    private transient String caller;
    private transient ExecutorService httpThreads;
    private transient HttpClient client;
    private transient ScheduledThreadPoolExecutor timer;

    private WaioAsyncFunction(Builder b) {
        this.endpoint = URI.create(b.url.replaceAll("/+$", "") + "/v1/invoke");
        this.batchSize = b.batchSize;
        this.linger = b.linger;
        this.capacity = b.capacity;
        this.callerName = b.caller;
        this.fatalMode = b.fatalMode;
        this.requestTimeout = b.requestTimeout;
    }

    /** A function calling the sidecar at {@code url} (e.g. {@code http://127.0.0.1:8700}). */
    public static Builder builder(String url) {
        return new Builder(url);
    }

    /**
     * Whether an output is a failed record's {@code {"waio_error":..,"input":..}} (with
     * {@link FatalMode#OUTPUT}), for a ProcessFunction that routes those to a side output.
     */
    public static boolean isErrorOutput(String output) {
        return output.startsWith("{\"waio_error\":");
    }

    @Override
    public void open(OpenContext openContext) throws Exception {
        String name = callerName;
        if (name == null) {
            name = getRuntimeContext().getJobInfo().getJobName();
        }
        if (name == null || name.isBlank()) {
            name = "flink";
        }
        int subtask = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
        // Header values must be visible ASCII: anything else in a job name becomes '_'.
        caller = (name + "/" + subtask).replaceAll("[^\\x20-\\x7e]", "_");
        lock = new Object();
        inputs = new ArrayList<>();
        futures = new ArrayList<>();
        inFlight = new AtomicInteger();
        sent = ConcurrentHashMap.newKeySet();
        httpThreads = Executors.newCachedThreadPool(daemon("waio-http-" + subtask));
        client = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(CONNECT_TIMEOUT)
                .executor(httpThreads)
                .build();
        timer = new ScheduledThreadPoolExecutor(1, daemon("waio-linger-" + subtask));
        timer.setRemoveOnCancelPolicy(true);
        LOG.info("waio: {} sends batches of up to {} records (linger {} ms, capacity {}) to {}",
                caller, batchSize, linger.toMillis(), capacity, endpoint);
    }

    /** On the task thread: adds the record to the batch and sends the batch when it is due. */
    @Override
    public void asyncInvoke(String input, ResultFuture<String> resultFuture) {
        if (input.indexOf('\n') >= 0) {
            // A line of the request body is a record: a newline inside one would split it.
            new WaioBatch(List.of(input), List.of(resultFuture), fatalMode, () -> {})
                    .fail(0, new WaioFatalException("invalid", "the record holds a raw newline (send compact JSON)"));
            return;
        }
        WaioBatch due = null;
        synchronized (lock) {
            inputs.add(input);
            futures.add(resultFuture);
            if (inputs.size() >= batchSize || inputs.size() + inFlight.get() >= capacity || linger.isZero()) {
                due = take();
            } else if (inputs.size() == 1) {
                long number = batchNumber;
                lingerTimer = timer.schedule(() -> lingered(number), linger.toNanos(), TimeUnit.NANOSECONDS);
            }
        }
        if (due != null) {
            send(due);
        }
    }

    /** On the timer thread: sends batch {@code number} if it is still being filled. */
    private void lingered(long number) {
        WaioBatch due = null;
        synchronized (lock) {
            if (batchNumber == number && !inputs.isEmpty()) {
                due = take();
            }
        }
        if (due != null) {
            send(due);
        }
    }

    /** Under the lock: the batch being filled, as a batch to send; a new one starts. */
    private WaioBatch take() {
        if (lingerTimer != null) {
            lingerTimer.cancel(false);
            lingerTimer = null;
        }
        WaioBatch batch = new WaioBatch(inputs, futures, fatalMode, inFlight::decrementAndGet);
        inFlight.addAndGet(batch.size());
        inputs = new ArrayList<>();
        futures = new ArrayList<>();
        batchNumber++;
        return batch;
    }

    private void send(WaioBatch batch) {
        HttpRequest.Builder request = HttpRequest.newBuilder(endpoint)
                .version(HttpClient.Version.HTTP_1_1)
                .header("Content-Type", "application/x-ndjson")
                .header("X-Waio-Caller", caller)
                .POST(HttpRequest.BodyPublishers.ofString(batch.body()));
        if (requestTimeout != null) {
            request.timeout(requestTimeout);
        }
        sent.add(batch);
        try {
            batch.send(client, request.build(), () -> sent.remove(batch));
        } catch (RuntimeException e) {
            // sendAsync itself threw (the HttpClient's threads are shut down): nothing was sent.
            batch.broken(e);
            sent.remove(batch);
        }
    }

    /** Stops the timer and fails, as retriable, every record not completed yet. */
    @Override
    public void close() throws Exception {
        if (timer == null) {
            return; // never opened
        }
        timer.shutdownNow();
        WaioBatch unsent;
        synchronized (lock) {
            unsent = inputs.isEmpty() ? null : take();
        }
        List<WaioBatch> open = new ArrayList<>(sent);
        if (unsent != null) {
            open.add(unsent);
        }
        for (WaioBatch batch : open) {
            try {
                batch.abandon();
            } catch (RuntimeException e) {
                // The operator is going away (failover, cancel): its futures may refuse completion.
                LOG.debug("waio: completing a record at close failed", e);
            }
        }
        httpThreads.shutdownNow();
        super.close();
    }

    private static ThreadFactory daemon(String name) {
        AtomicInteger count = new AtomicInteger();
        return runnable -> {
            Thread thread = new Thread(runnable, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }

    /** Settings of a {@link WaioAsyncFunction}; each has a default but the sidecar's URL. */
    public static final class Builder {
        private final String url;
        private int batchSize = 50;
        private Duration linger = Duration.ofMillis(5);
        private int capacity = 100;
        private String caller;
        private FatalMode fatalMode = FatalMode.FAIL;
        private Duration requestTimeout;

        private Builder(String url) {
            this.url = url;
        }

        /** Records per request at most (default 50). */
        public Builder batchSize(int batchSize) {
            this.batchSize = positive(batchSize, "batchSize");
            return this;
        }

        /** How long a batch waits for more records after its first (default 5 ms; zero: never). */
        public Builder linger(Duration linger) {
            if (linger.isNegative()) {
                throw new IllegalArgumentException("linger must not be negative");
            }
            this.linger = linger;
            return this;
        }

        /** The capacity given to AsyncDataStream, which must be the same (default 100). */
        public Builder capacity(int capacity) {
            this.capacity = positive(capacity, "capacity");
            return this;
        }

        /** The X-Waio-Caller name, sent as {@code name/<subtask index>} (default: the job's name). */
        public Builder caller(String caller) {
            this.caller = caller;
            return this;
        }

        /** What a fatal or invalid record does (default {@link FatalMode#FAIL}). */
        public Builder fatalAs(FatalMode fatalMode) {
            this.fatalMode = fatalMode;
            return this;
        }

        /**
         * How long a request may wait for the sidecar's response headers (default: no limit).
         * Per-record time is bounded by Flink's async timeout and waio's own timeout.
         */
        public Builder requestTimeout(Duration requestTimeout) {
            this.requestTimeout = requestTimeout;
            return this;
        }

        public WaioAsyncFunction build() {
            URI.create(url); // fails on a malformed URL now, not in the TaskManager
            return new WaioAsyncFunction(this);
        }

        private static int positive(int value, String name) {
            if (value < 1) {
                throw new IllegalArgumentException(name + " must be at least 1, not " + value);
            }
            return value;
        }
    }
}
