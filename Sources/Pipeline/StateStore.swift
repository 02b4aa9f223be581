// A state store: one state partition's windows and history, its changelog writer and its restorer.
import AuditEvents
import Detection
import Kafka

/// The aggregation state of one ``StatePartition``, and what it writes to (and reads back from) its
/// changelog partition. Changelog keys: `w|<group key>` → the key's windows (tombstone when it has none),
/// `t|<terms>` → a `new_terms` combination's last sighting, `p|` → the store's position: the next offset of
/// the partition that carries it. The position is written after the state it covers, in the same batch, so
/// a restored store knows exactly which records are already in it: those below its position are skipped,
/// and consumption resumes there, whatever the committed offset says.
struct StateStore {
    let id: StatePartition
    var state: RuleState
    /// The next offset of the carrying partition to apply; nil before the first record.
    private(set) var position: Int64?
    private var writtenPosition: Int64?
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

    /// One record per key changed since the last call, then the position when the state or it moved.
    mutating func changelogRecords(topic: String) -> [OutputRecord] {
        var records: [OutputRecord] = []
        let partition = id.partition
        for key in state.dirtyKeys.sorted() {
            let windows = state.suppressor.state(of: key)
            records.append(OutputRecord(
                topic: topic, partition: partition, key: Array("w|\(key)".utf8),
                value: windows.map { StateCodec.encode(windows: $0, streamTime: state.suppressor.streamTime) }, lastWriteWins: true))
        }
        for key in state.dirtyTerms.sorted(by: { $0.values.lexicographicallyPrecedes($1.values) }) {
            let seen = state.history.lastSeen(key) ?? 0
            records.append(OutputRecord(
                topic: topic, partition: partition, key: Array(("t|" + key.values.joined(separator: "\u{1F}")).utf8),
                value: Array("{\"last_seen\":\(seen)}".utf8), lastWriteWins: true))
        }
        state.dirtyKeys.removeAll()
        state.dirtyTerms.removeAll()
        if let position, !records.isEmpty || position != writtenPosition {
            records.append(OutputRecord(topic: topic, partition: partition, key: Self.positionKey,
                                        value: Array("{\"next_offset\":\(position)}".utf8), lastWriteWins: true))
            writtenPosition = position
        }
        return records
    }

    static let positionKey = Array("p|".utf8)

    /// Rebuilds a store from its changelog partition read to its end: the latest value of every key.
    static func restore(id: StatePartition, empty: RuleState, latest: [[UInt8]: [UInt8]?], now: Int64) throws -> StateStore {
        var store = StateStore(id: id, state: empty)
        for (rawKey, value) in latest {
            let key = String(decoding: rawKey, as: UTF8.self)
            if key.hasPrefix("w|") {
                guard let value else { continue }
                let decoded = try value.withUnsafeBytes { try StateCodec.decodeWindows($0) }
                store.state.suppressor.restore(key: String(key.dropFirst(2)), windows: decoded.windows)
                store.state.suppressor.restore(streamTime: decoded.streamTime)
            } else if key.hasPrefix("t|"), let value, let object = try? JSONValue.parse(value).objectValue,
                case .number(let seen)? = object["last_seen"], let time = seen.intValue
            {
                let terms = String(key.dropFirst(2)).split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
                store.state.history.record(TermsKey(terms), at: time)
            } else if rawKey == positionKey, let value, let object = try? JSONValue.parse(value).objectValue,
                case .number(let next)? = object["next_offset"], let offset = next.intValue
            {
                store.position = offset
                store.writtenPosition = offset
            }
        }
        store.state.suppressor.markActive(now: now)
        return store
    }
}
