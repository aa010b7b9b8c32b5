package io.waio.flink;

import org.apache.flink.runtime.throwable.ThrowableAnnotation;
import org.apache.flink.runtime.throwable.ThrowableType;

/**
 * A record that no retry can save: the plugin answered {@code fatal}, the record or an output was
 * not JSON ({@code invalid}), or the sidecar refused the batch ({@code rejected}, a 4xx).
 *
 * <p>Marked {@link ThrowableType#NonRecoverableError}: Flink fails the job instead of restarting
 * it, since a restart would replay the same record into the same failure.
 */
@ThrowableAnnotation(ThrowableType.NonRecoverableError)
public final class WaioFatalException extends WaioException {
    private static final long serialVersionUID = 1L;

    public WaioFatalException(String kind, String message) {
        super(kind, message);
    }
}
