package io.waio.flink;

/**
 * A record that the waio sidecar did not enrich. {@link #kind()} is the answer's
 * {@code error.kind} ({@code retriable}, {@code timeout}, {@code lost}, {@code fatal},
 * {@code invalid}), or {@code unavailable} when no answer came (connection refused or reset, 503,
 * another 5xx), or {@code rejected} for a batch refused with a 4xx.
 */
public abstract class WaioException extends Exception {
    private static final long serialVersionUID = 1L;

    private final String kind;
    private final String reason;

    WaioException(String kind, String reason) {
        super(kind + ": " + reason);
        this.kind = kind;
        this.reason = reason;
    }

    /** The failure's kind, as the sidecar names it. */
    public String kind() {
        return kind;
    }

    /** The message without the kind: the sidecar's {@code error.message}, or what went wrong. */
    public String reason() {
        return reason;
    }
}
