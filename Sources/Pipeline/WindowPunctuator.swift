// The window punctuator: wall-clock punctuation of the state stores — idle closes and interim updates.
import AuditEvents
import Detection

/// Runs on every poll of the loop, records or not, with the injected wall clock:
/// - a store whose partition has been quiet longer than the idle timeout moves its stream time on by the
///   idle time, closing the windows that leaves behind (their final updates). Behind a repartition topic
///   the move is made durable first: the store writes a watermark record to its own partition and applies
///   it when it reads it back, so a replay after a crash closes the same windows at the same place in the
///   log, whatever the wall clock says then. Only a store that has read its partition to the end, and has
///   been caught up here for the idle timeout, is idle: one catching up after a restore (or waiting for an
///   upstream that is catching up) is behind, not quiet;
/// - every `interimUpdateMilliseconds`, an open window that suppressed matches since its last published
///   version is published again with its counts so far (same alert id, `update`), as Elastic refreshes a
///   suppressed alert on every rule run. The final version at the close is always published as well.
struct WindowPunctuator {
    let interval: Int64

    /// The alert actions due at `now`, for one store, in a deterministic order, and the watermark to write
    /// to the store's partition, if any.
    /// - Parameters:
    ///   - caughtUp: the store has read its partition to the end;
    ///   - durable: idle moves go through a watermark record (the store's partition is a repartition topic).
    func punctuate(_ store: inout StateStore, now: Int64, caughtUp: Bool, durable: Bool) -> (actions: [AlertAction], watermark: Int64?) {
        var actions: [AlertAction] = []
        var watermark: Int64?
        if !caughtUp {
            store.caughtUpSince = nil
        } else if store.caughtUpSince == nil {
            store.caughtUpSince = now
        }
        if let since = store.caughtUpSince, now - since > store.state.suppressor.configuration.idleTimeout {
            if durable {
                if let target = store.state.suppressor.idleTarget(now: now), target > (store.pendingWatermark ?? .min) {
                    store.pendingWatermark = target
                    watermark = target
                }
            } else {
                actions = store.state.tick(now: now)
            }
        }
        return (interim(&store, now: now, closing: actions), watermark)
    }

    /// Applies a watermark read back from the store's partition.
    func apply(watermark: Int64, to store: inout StateStore) -> [AlertAction] {
        if let pending = store.pendingWatermark, pending <= watermark { store.pendingWatermark = nil }
        let actions = store.state.advance(toWatermark: watermark)
        for action in actions where action.kind == .update { store.publishedSuppressed.removeValue(forKey: Self.key(action.window)) }
        return actions
    }

    private func interim(_ store: inout StateStore, now: Int64, closing closed: [AlertAction]) -> [AlertAction] {
        var actions = closed
        for action in actions where action.kind == .update { store.publishedSuppressed.removeValue(forKey: Self.key(action.window)) }
        guard interval > 0 else { return actions }
        if store.lastInterim == .min { store.lastInterim = now }
        guard now - store.lastInterim >= interval else { return actions }
        store.lastInterim = now
        var open: [String: Int] = [:]
        var interim: [SuppressionWindow] = []
        // A window a watermark on its way will close gets its final version then, not an interim one now.
        let closing = max(store.state.suppressor.streamTime, store.pendingWatermark ?? .min)
        let grace = store.state.suppressor.configuration.grace
        for (_, windows) in store.state.suppressor.windows {
            for window in windows where !window.closed && window.end + grace >= closing {
                let key = Self.key(window)
                open[key] = store.publishedSuppressed[key] ?? 0
                if window.suppressed > (store.publishedSuppressed[key] ?? 0) {
                    interim.append(window)
                    open[key] = window.suppressed
                }
            }
        }
        // Only open windows are remembered: a closed one has had its final version.
        store.publishedSuppressed = open
        interim.sort { ($0.start, $0.groupKey) < ($1.start, $1.groupKey) }
        actions += interim.map { AlertAction(kind: .update, window: $0, late: false) }
        return actions
    }

    static func key(_ window: SuppressionWindow) -> String { "\(window.groupKey)@\(window.start)" }
}
