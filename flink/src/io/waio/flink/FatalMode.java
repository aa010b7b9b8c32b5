package io.waio.flink;

/**
 * What {@link WaioAsyncFunction} does with a record that cannot succeed by trying again: the
 * sidecar answered {@code fatal} (the plugin says so) or {@code invalid} (the record or an output
 * was not JSON), it refused the whole batch with a 4xx, or the record holds a raw newline.
 */
public enum FatalMode {
    /**
     * Complete the record with a {@link WaioFatalException}: the job fails at once (the exception
     * is marked non-recoverable, so the restart strategy does not replay the record forever).
     */
    FAIL,
    /**
     * Complete the record with one output {@code {"waio_error":{"kind":..,"message":..},
     * "input":<the input>}}, for the job to route to a side output or a dead-letter sink.
     */
    OUTPUT
}
