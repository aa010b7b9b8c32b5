package io.waio.flink;

/**
 * A record worth trying again: the provider failed after waio's own retries ({@code retriable}),
 * waio's per-record timeout passed ({@code timeout}), the sidecar stopped before answering it
 * ({@code lost}) or could not be reached ({@code unavailable}). {@link WaioRetries#strategy} retries
 * exactly these.
 */
public final class WaioRetriableException extends WaioException {
    private static final long serialVersionUID = 1L;

    public WaioRetriableException(String kind, String message) {
        super(kind, message);
    }
}
