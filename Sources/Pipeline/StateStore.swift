// A state store: one state partition's windows and history, its changelog writer and its restorer.
import AuditEvents
import Detection
import Kafka

/// Which matches of one input partition a store has applied: every position at or above the floor it was
/// told (by the detect side, in the match records) that nothing below it will be read again. Exact: a
/// match read twice (its input record re-read after a crash) is recognized whatever became of its key's
/// windows since, and a match resent out of order after a failed delivery is not mistaken for one.
public struct SourceLedger: Sendable, Equatable {
    public var floor: Int64
    public var applied: Set<Int64>

    func contains(_ position: Int64) -> Bool { position < floor || applied.contains(position) }

    mutating func insert(_ position: Int64, floor newFloor: Int64?) {
        applied.insert(position)
        if let newFloor, newFloor > floor {
            floor = newFloor
            applied = applied.filter { $0 >= newFloor }
        }
    }
}

/// The aggregation state of one ``StatePartition``, and what it writes to (and reads back from) its
/// changelog partition. Changelog keys: `w|<group key>` → the key's windows (tombstone when it has none),
/// `t|<terms>` → a `new_terms` combination's last sighting, `s|<join key>` → an EQL sequence rule's pending
/// sequences of the key (tombstone when none waits), `a|<group key>` → an aggregating ES|QL rule's group
/// (its panes of partial aggregates; tombstone once no execution to come covers them), `p|` → the store's position (the next offset of
/// the partition that carries it) and its clocks (stream time, last activity). The position is written after the state it covers, in the same batch, so
/// a restored store knows which records are already in it: those below its position are skipped, and
/// consumption resumes there when that is past the committed offset (a commit refused in a rebalance).
struct StateStore {
    let id: StatePartition
    var state: RuleState
    /// The next offset of the carrying partition to apply; nil before the first record.
    private(set) var position: Int64?
    private var writtenPosition: Int64?
    private var writtenClocks: AlertSuppressor.Clocks?
    /// Per input partition (`topic/partition`): the matches applied from it.
    var sources: [String: SourceLedger] = [:]
    private var sourcesWritten = false
    /// Since when (wall clock) this member has seen the store's partition read to its end, continuously; an
    /// idle close waits for the idle timeout of that too (not persisted: a store restored after an outage
    /// is not idle until it has been caught up that long here, however old its last record).
    var caughtUpSince: Int64?
    /// A watermark this store sent to its own partition and has not read back yet (not persisted: a new
    /// owner that finds none in the log sends its own).
    var pendingWatermark: Int64?
    /// Interim updates: the suppressed count last published per open window, and when.
    var publishedSuppressed: [String: Int] = [:]
    var lastInterim: Int64 = .min

    init(id: StatePartition, state: RuleState) {
        self.id = id
        self.state = state
    }

    /// Whether the record at `offset` of the carrying partition is already in the state.
    func covers(offset: Int64) -> Bool { position.map { offset < $0 } ?? false }

    mutating func advance(pastOffset offset: Int64) { position = max(position ?? .min, offset + 1) }

    /// Records a match about to be applied; false when the store has applied it already.
    mutating func admit(_ match: RuleMatch, floor: Int64?) -> Bool {
        let source = "\(match.source.topic)/\(match.source.partition)"
        var ledger = sources[source] ?? SourceLedger(floor: .min, applied: [])
        guard !ledger.contains(match.sourcePosition) else { return false }
        ledger.insert(match.sourcePosition, floor: floor.map { $0 << 20 })
        sources[source] = ledger
        sourcesWritten = false
        return true
    }

    /// The changelog writes since the last call, in an order that keeps every prefix of them consistent
    /// (the producer is idempotent: a partition's records land in send order, or a suffix of them fails):
    /// the keys that have state, then the position, then the tombstones of keys whose windows or
    /// aggregation groups are gone. A restore that sees such a tombstone therefore sees the position past
    /// every record of that key; one that sees a key's record newer than the position recognizes the
    /// replayed matches by their input positions. A group restored from before its tombstone is harmless:
    /// its panes are below every execution still to run and its last pass too old to make a repeat.
    /// Sequence tombstones go before the position instead: a restore at a position must not find a
    /// sequence that the records below it ended (an `until`), which could then complete.
    mutating func changelogRecords(topic: String) -> [OutputRecord] {
        let partition = id.partition, ruleID = id.ruleID
        /// A key's record: its state's encoding, or a tombstone (nil) when the key has none left.
        func record(_ prefix: String, _ key: String, _ value: [UInt8]?) -> OutputRecord {
            OutputRecord(topic: topic, partition: partition, key: Array((prefix + key).utf8), value: value, lastWriteWins: true)
        }
        let streamTime = state.suppressor.streamTime
        let windowRecords = state.dirtyKeys.sorted().map { key in
            record("w|", key, state.suppressor.state(of: key).map { StateCodec.encode(windows: $0, streamTime: streamTime) })
        }
        var upserts = windowRecords.filter { $0.value != nil }
        var tombstones = windowRecords.filter { $0.value == nil }
        upserts += state.dirtyTerms.sorted(by: { $0.values.lexicographicallyPrecedes($1.values) }).map { key in
            record("t|", key.values.joined(separator: "\u{1F}"), Array("{\"last_seen\":\(state.history.lastSeen(key) ?? 0)}".utf8))
        }
        // Sequence tombstones stay among the upserts, before the position (see above).
        upserts += state.dirtySequenceKeys.sorted().map { key in
            record("s|", key, state.sequences?.state(of: key).map { StateCodec.encode(waiting: $0, ruleID: ruleID) })
        }
        let groupRecords = (state.aggregation?.dirty ?? []).sorted().map { key in
            record("a|", key, state.aggregation?.state(of: key).map { StateCodec.encode(group: $0, ruleID: ruleID) })
        }
        upserts += groupRecords.filter { $0.value != nil }
        tombstones += groupRecords.filter { $0.value == nil }
        state.aggregation?.dirty.removeAll()
        state.dirtyKeys.removeAll()
        state.dirtyTerms.removeAll()
        state.dirtySequenceKeys.removeAll()
        var records = upserts
        let clocks = state.suppressor.clocks
        if !upserts.isEmpty || !tombstones.isEmpty || position != writtenPosition || clocks != writtenClocks || !sourcesWritten {
            records.append(OutputRecord(topic: topic, partition: partition, key: Self.positionKey,
                                        value: StateCodec.encode(position: position, clocks: clocks, sources: sources), lastWriteWins: true))
            writtenPosition = position
            writtenClocks = clocks
            sourcesWritten = true
        }
        return records + tombstones
    }

    static let positionKey = Array("p|".utf8)

    /// Rebuilds a store from its changelog partition read to its end: the latest value of every key.
    static func restore(id: StatePartition, empty: RuleState, latest: [[UInt8]: [UInt8]?], now: Int64) throws -> StateStore {
        var store = StateStore(id: id, state: empty)
        var clocks: AlertSuppressor.Clocks?
        if let value = latest[positionKey], let value {
            let decoded = try value.withUnsafeBytes { try StateCodec.decodePosition($0) }
            store.position = decoded.position
            store.writtenPosition = decoded.position
            store.sources = decoded.sources
            store.sourcesWritten = true
            clocks = decoded.clocks
        }
        // Without a position, whatever the changelog holds was written by a batch whose position never
        // landed: consumption resumes at the committed offset, before all of it, and rebuilds it.
        for (rawKey, value) in latest where clocks != nil {
            let key = String(decoding: rawKey, as: UTF8.self)
            if key.hasPrefix("w|") {
                guard let value else { continue }
                let decoded = try value.withUnsafeBytes { try StateCodec.decodeWindows($0) }
                store.state.suppressor.restore(key: String(key.dropFirst(2)), windows: decoded.windows, movingClocks: false)
            } else if key.hasPrefix("a|") {
                guard let value else { continue }
                let group = try value.withUnsafeBytes { try StateCodec.decodeGroup($0) }
                store.state.aggregation?.restore(key: String(key.dropFirst(2)), group: group)
            } else if key.hasPrefix("s|") {
                guard let value else { continue }
                let waiting = try value.withUnsafeBytes { try StateCodec.decodeWaiting($0) }
                store.state.sequences?.restore(key: String(key.dropFirst(2)), waiting: waiting)
            } else if key.hasPrefix("t|"), let value, let object = try? JSONValue.parse(value).objectValue,
                case .number(let seen)? = object["last_seen"], let time = seen.intValue
            {
                let terms = String(key.dropFirst(2)).split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
                store.state.history.record(TermsKey(terms), at: time)
            }
        }
        if let clocks {
            store.state.suppressor.restore(clocks: clocks)
            store.writtenClocks = store.state.suppressor.clocks
            // Executions run whenever stream time moves: those up to the restored stream time have run.
            if clocks.streamTime != .min { store.state.aggregation?.restore(horizon: clocks.streamTime - store.state.suppressor.configuration.grace) }
        }
        store.state.suppressor.markActive(now: now)
        return store
    }
}
