package io.waio.flink;

import java.io.IOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpResponse.BodySubscribers;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Flow;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.cfg.JsonNodeFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.json.JsonMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.TextNode;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One {@code POST /v1/invoke}: a batch of records and their result futures. Each record is
 * completed as its answer line arrives (the sidecar writes them in completion order); whatever
 * has no line when the response ends or breaks is completed as retriable. Every record is
 * completed exactly once ({@link #claim}); {@code onSettled} runs once per record.
 */
final class WaioBatch {
    private static final Logger LOG = LoggerFactory.getLogger(WaioBatch.class);

    /** Exact decimals: an output's numbers leave as they came (no double rounding). */
    private static final ObjectMapper JSON =
            JsonMapper.builder()
                    .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
                    .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                    .disable(JsonNodeFeature.STRIP_TRAILING_BIGDECIMAL_ZEROES)
                    .build();

    private final List<String> inputs;
    private final List<ResultFuture<String>> futures;
    private final FatalMode fatalMode;
    private final Runnable onSettled;
    private final boolean[] done;
    /** The sidecar answered 200: a failure from now on loses records it had taken. */
    private volatile boolean answered;

    WaioBatch(List<String> inputs, List<ResultFuture<String>> futures, FatalMode fatalMode, Runnable onSettled) {
        this.inputs = inputs;
        this.futures = futures;
        this.fatalMode = fatalMode;
        this.onSettled = onSettled;
        this.done = new boolean[inputs.size()];
    }

    int size() {
        return inputs.size();
    }

    /** The request body: one record per line. */
    String body() {
        int length = 0;
        for (String input : inputs) {
            length += input.length() + 1;
        }
        StringBuilder body = new StringBuilder(length);
        for (String input : inputs) {
            body.append(input).append('\n');
        }
        return body.toString();
    }

    /** Sends the batch; {@code whenDone} runs once every record is completed or failed. */
    void send(HttpClient client, HttpRequest request, Runnable whenDone) {
        HttpResponse.BodyHandler<Void> handler =
                info -> {
                    int status = info.statusCode();
                    if (status == 200) {
                        answered = true;
                        return BodySubscribers.fromLineSubscriber(
                                new Lines(), lines -> null, StandardCharsets.UTF_8, "\n");
                    }
                    return BodySubscribers.mapping(
                            BodySubscribers.ofString(StandardCharsets.UTF_8),
                            text -> {
                                refused(status, text.trim());
                                return null;
                            });
                };
        client.sendAsync(request, handler)
                .whenComplete(
                        (response, error) -> {
                            try {
                                if (error != null) {
                                    broken(error);
                                } else {
                                    failRemaining(new WaioRetriableException("lost",
                                            "the sidecar's response ended before this record's line"));
                                }
                            } finally {
                                whenDone.run();
                            }
                        });
    }

    /** One answer line: {@code {"i":N,"outputs":[...]}} or {@code {"i":N,"error":{...}}}. */
    void line(String line) {
        if (line.isBlank()) {
            return;
        }
        int i;
        JsonNode outputs;
        JsonNode error;
        List<String> results = new ArrayList<>();
        try {
            JsonNode answer = JSON.readTree(line);
            i = answer.path("i").canConvertToInt() ? answer.path("i").intValue() : -1;
            outputs = answer.get("outputs");
            error = answer.get("error");
            if (outputs != null && outputs.isArray()) {
                for (JsonNode output : outputs) {
                    results.add(JSON.writeValueAsString(output));
                }
            }
        } catch (IOException e) {
            // A protocol bug; the line's record is failed as lost when the response ends.
            LOG.warn("waio sidecar answered a line that is not JSON ({}): {}", e.getMessage(), line);
            return;
        }
        if (i < 0 || i >= done.length) {
            LOG.warn("waio sidecar answered a line for no record of the batch: {}", line);
        } else if (outputs != null && outputs.isArray()) {
            complete(i, results);
        } else if (error != null && error.isObject()) {
            fail(i, failure(error.path("kind").asText("fatal"), error.path("message").asText("")));
        } else {
            LOG.warn("waio sidecar answered a line with neither outputs nor error: {}", line);
        }
    }

    /** The answer's error kind as an exception: the retriable kinds, everything else fatal. */
    static WaioException failure(String kind, String message) {
        switch (kind) {
            case "retriable":
            case "timeout":
            case "lost":
            case "unavailable":
                return new WaioRetriableException(kind, message);
            default:
                return new WaioFatalException(kind, message);
        }
    }

    /** A batch that got no 200: 503 (stopping or overloaded), 408, 429 and 5xx are retriable. */
    private void refused(int status, String text) {
        String message = "the sidecar answered HTTP " + status + ": " + text;
        boolean retriable = status == 408 || status == 429 || status >= 500;
        failRemaining(retriable ? new WaioRetriableException("unavailable", message)
                : new WaioFatalException("rejected", message));
    }

    /** The function is closing: whatever has no answer yet is retriable. */
    void abandon() {
        failRemaining(new WaioRetriableException("lost", "the WaioAsyncFunction was closed before the answer came"));
    }

    /** The connection failed (refused, reset, EOF mid-response) or could not be opened. */
    void broken(Throwable error) {
        Throwable cause = error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
        String what = answered ? "sidecar connection lost: " : "sidecar unreachable: ";
        failRemaining(new WaioRetriableException(answered ? "lost" : "unavailable", what + describe(cause)));
    }

    /** The error and its causes: HttpClient's ConnectException says "refused" only in its cause. */
    private static String describe(Throwable error) {
        StringBuilder text = new StringBuilder(error.toString());
        for (Throwable cause = error.getCause(); cause != null && text.length() < 500; cause = cause.getCause()) {
            text.append(" (").append(cause).append(')');
        }
        return text.toString();
    }

    private void failRemaining(WaioException failure) {
        for (int i = 0; i < done.length; i++) {
            fail(i, failure);
        }
    }

    /** Completes record i with its outputs, unless it is completed. */
    private void complete(int i, List<String> results) {
        if (!claim(i)) {
            return;
        }
        try {
            futures.get(i).complete(results);
        } finally {
            onSettled.run();
        }
    }

    /** Completes record i with the failure (or its error output), unless it is completed. */
    void fail(int i, WaioException failure) {
        if (!claim(i)) {
            return;
        }
        try {
            if (failure instanceof WaioFatalException && fatalMode == FatalMode.OUTPUT) {
                futures.get(i).complete(Collections.singletonList(errorOutput(failure, inputs.get(i))));
            } else {
                futures.get(i).completeExceptionally(failure);
            }
        } finally {
            onSettled.run();
        }
    }

    /** {@code {"waio_error":{"kind":..,"message":..},"input":<input>}}, the input as a string when it is not JSON. */
    static String errorOutput(WaioException failure, String input) {
        ObjectNode output = JSON.createObjectNode();
        ObjectNode error = output.putObject("waio_error");
        error.put("kind", failure.kind());
        error.put("message", failure.reason());
        JsonNode parsed;
        try {
            parsed = JSON.readTree(input);
        } catch (Exception notJson) {
            parsed = null;
        }
        output.set("input", parsed != null && !parsed.isMissingNode() ? parsed : TextNode.valueOf(input));
        try {
            return JSON.writeValueAsString(output);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write a JSON tree", e);
        }
    }

    /** Marks record i as completed; false when it already was. */
    private synchronized boolean claim(int i) {
        if (done[i]) {
            return false;
        }
        done[i] = true;
        return true;
    }

    /** Hands each line to {@link #line}; the end and errors reach {@code sendAsync}'s future. */
    private final class Lines implements Flow.Subscriber<String> {
        @Override
        public void onSubscribe(Flow.Subscription subscription) {
            subscription.request(Long.MAX_VALUE);
        }

        @Override
        public void onNext(String item) {
            line(item);
        }

        @Override
        public void onError(Throwable throwable) {}

        @Override
        public void onComplete() {}
    }
}
