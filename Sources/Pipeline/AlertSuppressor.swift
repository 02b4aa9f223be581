import AuditEvents
import Detection

/// One rule match on its way to suppression: what the detect stage writes to the repartition topic.
public struct RuleMatch: Sendable, Equatable {
    /// The rule's group-by values; `nil` for a missing field.
    public var groupValues: [String?]
    /// Event time (`event.ingested`, the rule's `timestamp_override`), milliseconds.
    public var eventTime: Int64
    /// The event's normalized ECS document, as a tree (parsed from ``documentBytes`` on each call: for
    /// tests and tools; the pipeline reads the bytes).
    public var document: JSONObject {
        get { (try? JSONValue.parse(documentBytes))?.objectValue ?? [:] }
        set {
            var bytes: [UInt8] = []
            JSONValue.object(newValue).write(to: &bytes, sortedKeys: true)
            documentBytes = bytes
        }
    }
    /// The ECS document as canonical JSON (compact, keys in order): written straight from the record by the
    /// detect side, then spliced as it is into repartition records, window state and alerts. For an
    /// aggregating ES|QL rule's match made in this process: its contribution, encoded each time it is asked
    /// for (only a repartition record asks, once).
    public var documentBytes: [UInt8] {
        get { storedBytes.isEmpty ? contribution?.bytes ?? [] : storedBytes }
        set { storedBytes = newValue }
    }
    private var storedBytes: [UInt8]
    /// Where the event came from: input topic, partition, offset.
    public var source: RecordPosition
    /// The match's place among those one input record produced (events of a batch, term combinations).
    public var sequence: Int
    /// For an EQL sequence rule: the steps the event matches (bit `i` for step `i`,
    /// ``EQLSequenceSteps/untilBit`` for the until query); 0 for other rules.
    public var steps: UInt32 = 0
    /// For an aggregating ES|QL rule, in the process that made it: ``documentBytes`` decoded, so that a
    /// match applied without crossing a topic is not parsed again (nil once read from a record). Not part
    /// of equality: it is the bytes' own content.
    public var contribution: ESQLContribution?
    /// The document's values of the fields a window summarizes, read from the event where the document was
    /// written and carried with the match (in its repartition record too), so that a suppressed match adds
    /// to its window's summary without its document being parsed again. Nil: read from ``documentBytes``
    /// when needed. Not part of equality: they are the document's own values.
    public var summaryValues: SuppressionSummary.Values?

    public init(groupValues: [String?], eventTime: Int64, document: JSONObject, source: RecordPosition, sequence: Int = 0) {
        var bytes: [UInt8] = []
        JSONValue.object(document).write(to: &bytes, sortedKeys: true)
        self.init(groupValues: groupValues, eventTime: eventTime, documentBytes: bytes, source: source, sequence: sequence)
    }

    /// - Parameter documentBytes: the document in canonical form (``AuditEvent/canonicalDocument(ingestedIfMissing:)``).
    public init(groupValues: [String?], eventTime: Int64, documentBytes: [UInt8], source: RecordPosition, sequence: Int = 0) {
        self.groupValues = groupValues
        self.eventTime = eventTime
        self.storedBytes = documentBytes
        self.source = source
        self.sequence = sequence
    }

    public static func == (lhs: RuleMatch, rhs: RuleMatch) -> Bool {
        lhs.groupValues == rhs.groupValues && lhs.eventTime == rhs.eventTime && lhs.source == rhs.source
            && lhs.sequence == rhs.sequence && lhs.steps == rhs.steps && (lhs.documentBytes == rhs.documentBytes || lhs.document == rhs.document)
    }

    /// The match's position in its input partition: input offset, then sequence within the record. A match
    /// at or before the position already applied for its key is a replay.
    public var sourcePosition: Int64 { source.offset << 20 | Int64(min(sequence, (1 << 20) - 1)) }

    var sourcePartition: String { "\(source.topic)/\(source.partition)" }

    /// As the window it opens keeps it: its summary values are for adding to a summary, which a window's
    /// first match seldom is (kept, they would cost a window ~600 bytes).
    var withoutSummaryValues: RuleMatch {
        var match = self
        match.summaryValues = nil
        return match
    }

    /// The match's event, by input position (and place in its record when not the first): what makes
    /// the id of an alert that stands alone unique.
    var sourceIdentity: String { "\(sourcePartition)/\(source.offset)" + (sequence == 0 ? "" : "/\(sequence)") }

    /// Whether this match comes before `other` in the input: by topic, partition and position. The order
    /// of arrival is not it: a resent repartition record, or partitions interleaved by another poll, can
    /// bring a later match of the same event time first.
    func precedesInInput(_ other: RuleMatch) -> Bool {
        (source.topic, source.partition, sourcePosition) < (other.source.topic, other.source.partition, other.sourcePosition)
    }

    /// The suppression key: the group values joined unambiguously (a missing field is its own value).
    public var groupKey: String { String(decoding: groupKeyBytes, as: UTF8.self) }

    /// ``groupKey`` as UTF-8 (the repartition record's key), formed as bytes: a match's path asks for it on
    /// both sides of the repartition topic. `\` and `|` are ASCII, never inside a multi-byte sequence, so
    /// escaping bytes escapes scalars.
    public var groupKeyBytes: [UInt8] {
        var key: [UInt8] = []
        key.reserveCapacity(groupValues.reduce(0) { $0 + 4 + ($1?.utf8.count ?? 0) })
        for (index, value) in groupValues.enumerated() {
            if index > 0 { key.append(UInt8(ascii: "|")) }
            guard var value else {
                key.append(contentsOf: "∅".utf8)
                continue
            }
            key.append(UInt8(ascii: "="))
            value.withUTF8 { bytes in
                // Most values have neither: appended as they are.
                if !bytes.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "|") }) { return key.append(contentsOf: bytes) }
                for byte in bytes {
                    if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "|") { key.append(UInt8(ascii: "\\")) }
                    key.append(byte)
                }
            }
        }
        return key
    }

    public var hasMissingFields: Bool { groupValues.contains(nil) }
}

public struct RecordPosition: Sendable, Hashable, Codable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

/// What was tried during a window: counts and capped lists of distinct values.
public struct SuppressionSummary: Sendable, Equatable, Codable {
    public static let cap = 10
    public var count = 0
    public var verbs: [String] = []
    public var resources: [String] = []
    public var namespaces: [String] = []
    public var sourceIPs: [String] = []
    public var userAgents: [String] = []
    public var responseCodes: [String] = []
    public var firstSeen: Int64 = .max
    public var lastSeen: Int64 = .min

    public init() {}

    /// One match's values of the summarized fields, in the summary's order of fields.
    public struct Values: Sendable, Equatable {
        public static let fields = [
            FieldPath("kubernetes.audit.verb"), FieldPath("kubernetes.audit.objectRef.resource"), FieldPath("kubernetes.audit.objectRef.namespace"),
            FieldPath("source.ip"), FieldPath("user_agent.original"), FieldPath("kubernetes.audit.responseStatus.code"),
        ]
        /// Per field of ``fields``, its values in document order, as a field lookup gives them (empty strings
        /// and nulls left out).
        public var lists: [[String]]

        /// - Parameter forEachValue: a document's field lookup (the event's lazy view, or a parsed document).
        public init(_ forEachValue: (FieldPath, (FieldValue) -> Bool) -> Void) {
            lists = Self.fields.map { field in
                var found: [String] = []
                forEachValue(field) { value in
                    found.append(value.stringValue)
                    return true
                }
                return found
            }
        }

        public init(lists: [[String]]) { self.lists = lists }

        /// The values of a document in canonical form; nil when it is not a JSON object.
        public init?(document bytes: [UInt8]) {
            guard let document = try? CanonicalDocument(bytes) else { return nil }
            self.init { field, body in document.forEachValue(of: field, body) }
        }
    }

    /// Counts `match` in, and adds its values of the summarized fields to their lists.
    mutating func add(_ match: RuleMatch) {
        count += 1
        firstSeen = min(firstSeen, match.eventTime)
        lastSeen = max(lastSeen, match.eventTime)
        guard let values = match.summaryValues ?? Values(document: match.documentBytes), values.lists.count == Values.fields.count else { return }
        // Each list holds the `cap` smallest distinct values, sorted: the same lists whatever order the
        // window's matches reach the store in (the first `cap` to arrive would depend on it).
        func collect(_ found: [String], into list: inout [String]) {
            for text in found {
                let index = list.firstIndex { $0 >= text } ?? list.endIndex
                guard index < Self.cap, index == list.endIndex || list[index] != text else { continue }
                list.insert(text, at: index)
                if list.count > Self.cap { list.removeLast() }
            }
        }
        // In the order of `Values.fields` (direct, not through key paths: this runs for every suppressed match).
        collect(values.lists[0], into: &verbs)
        collect(values.lists[1], into: &resources)
        collect(values.lists[2], into: &namespaces)
        collect(values.lists[3], into: &sourceIPs)
        collect(values.lists[4], into: &userAgents)
        collect(values.lists[5], into: &responseCodes)
    }
}

/// One open suppression window of one group key.
public struct SuppressionWindow: Sendable, Equatable {
    public var groupKey: String
    public var groupValues: [String?]
    /// `[start, end)` in event time.
    public var start: Int64
    public var end: Int64
    /// The match that opened the window: the alert's source event.
    public var first: RuleMatch
    /// Matches suppressed into the window (not counting the first).
    public var suppressed: Int
    public var summary: SuppressionSummary
    /// The last position applied to this key, per input partition: a replayed match at or below it (after a
    /// crash, input records are read again and their matches repartitioned again) is not counted again.
    public var applied: [String: Int64]
    /// The most recent positions applied, per input partition (at most ``recentCapacity``, ascending). A
    /// match resent after a failed delivery can arrive after later ones; below `applied` but above the
    /// oldest of these and not among them, it was never applied and is counted.
    public var recent: [String: [Int64]] = [:]
    public static let recentCapacity = 64
    /// Closed, its update published; kept for one more window length so that matches replayed after a crash
    /// are still recognized (instead of opening the window again with fewer matches).
    public var closed = false

    public var closesAt: Int64 { end }

    mutating func record(_ position: Int64, from source: String) {
        applied[source] = max(applied[source] ?? .min, position)
        // Changed in place in the map (a copy taken out would be copied again by the first insert).
        recent[source, default: []].insertAscending(position, keepingAtMost: Self.recentCapacity)
    }
}

extension Array where Element == Int64 {
    /// Inserts `value` in ascending order and drops the smallest beyond `capacity`.
    fileprivate mutating func insertAscending(_ value: Int64, keepingAtMost capacity: Int) {
        let index = firstIndex { $0 > value } ?? endIndex
        insert(value, at: index)
        if count > capacity { removeFirst(count - capacity) }
    }
}

/// An alert to publish: a new one, or the update of a window that suppressed matches.
public struct AlertAction: Sendable, Equatable {
    public enum Kind: String, Sendable { case new, update }
    public var kind: Kind
    public var window: SuppressionWindow
    /// A match that arrived after its window had already closed (it alerts on its own).
    public var late: Bool
}

/// Elastic's alert-suppression semantics in event time, for one rule and one partition of the repartition
/// topic: the first match of a key alerts at once and opens `[t, t + duration)`; later matches inside the
/// window are counted and summarized; when stream time (the highest event time seen on the partition) passes
/// the window's end plus the grace period, or the partition has been idle longer than the idle timeout
/// (wall clock, injected), the window closes and, if it suppressed anything, an update with the same alert
/// id is emitted. A match after its key's window starts a new window. A match older than every retained
/// window of its key (late, past grace) still alerts, on its own, and is counted as late. Deterministic:
/// the same records give the same actions.
public struct AlertSuppressor: Sendable {
    public struct Configuration: Sendable, Equatable {
        public var duration: Int64
        public var grace: Int64
        public var idleTimeout: Int64
        public var missingFieldsStrategy: DetectionRule.AlertSuppression.MissingFieldsStrategy

        public init(duration: Int64 = 5 * 60_000, grace: Int64 = 30_000, idleTimeout: Int64 = 60_000,
                    missingFieldsStrategy: DetectionRule.AlertSuppression.MissingFieldsStrategy = .suppress) {
            self.duration = duration
            self.grace = grace
            self.idleTimeout = idleTimeout
            self.missingFieldsStrategy = missingFieldsStrategy
        }
    }

    public let configuration: Configuration
    /// Open windows by key; a key may hold a closed-but-in-grace window and its successor.
    public private(set) var windows: [String: [SuppressionWindow]] = [:]
    /// The earliest end among open windows: stream time below it plus grace closes nothing, so most matches
    /// skip the scan over every key.
    private var earliestEnd: Int64 = .max
    /// The highest event time seen (moved further by idle time on a quiet partition).
    public private(set) var streamTime: Int64 = .min
    /// The highest event time of the records themselves: idle time is counted from it.
    private var recordTime: Int64 = .min
    /// Wall-clock time of the last record (milliseconds, from the injected clock).
    public private(set) var lastActivity: Int64 = .min
    public private(set) var lateCount = 0
    public private(set) var duplicateCount = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public var openWindowCount: Int { windows.values.reduce(0) { $0 + $1.count { !$0.closed } } }

    /// Applies one match at wall-clock time `now`.
    /// - Parameter offset: the match's position in its input partition (``RuleMatch/sourcePosition``);
    ///   replays at or below the last applied position of the key are ignored.
    /// - Returns: the alerts to publish, in order: closed windows' updates first, then this match's alert.
    public mutating func apply(_ match: RuleMatch, offset: Int64, now: Int64) -> [AlertAction] {
        apply(match, key: match.groupKey, offset: offset, now: now)
    }

    /// ``apply(_:offset:now:)`` with the match's ``RuleMatch/groupKey`` already formed.
    mutating func apply(_ match: RuleMatch, key: String, offset: Int64, now: Int64) -> [AlertAction] {
        recordTime = max(recordTime, match.eventTime)
        var actions = advance(to: max(streamTime, match.eventTime))

        if match.hasMissingFields, configuration.missingFieldsStrategy == .doNotSuppress {
            lastActivity = now
            // Every such event alerts on its own: a window of its own that is never retained.
            var window = newWindow(for: match, key: key, offset: offset)
            window.groupKey = key + "#" + match.sourceIdentity
            actions.append(AlertAction(kind: .new, window: window, late: false))
            return actions
        }

        // Taken out of the map while it changes (left in, the map's reference would make every change copy
        // the array), and put back on every path below.
        var keyWindows = windows.removeValue(forKey: key) ?? []
        defer { if !keyWindows.isEmpty { windows[key] = keyWindows } }
        let source = match.sourcePartition
        if let applied = keyWindows.compactMap({ $0.applied[source] }).max(), offset <= applied {
            let recent = keyWindows.flatMap { $0.recent[source] ?? [] }
            if recent.isEmpty || offset < recent.min()! || recent.contains(offset) {
                // Replayed after a restart: this record is already in the state (nor does it count as
                // activity: idle time runs from the last new record, wherever it was read).
                duplicateCount += 1
                return actions
            }
        }
        lastActivity = now
        // The window holding the event; an event slightly out of order (before its key's window, but close
        // enough that a window opened by it would hold that window's start) joins that window.
        if let index = keyWindows.firstIndex(where: { !$0.closed && match.eventTime >= $0.start && match.eventTime < $0.end })
            ?? keyWindows.firstIndex(where: { !$0.closed && match.eventTime < $0.start && match.eventTime + configuration.duration > $0.start })
        {
            keyWindows[index].suppressed += 1
            if match.eventTime == keyWindows[index].first.eventTime, match.precedesInInput(keyWindows[index].first) {
                // Of matches with the window's first event time, the first in the input is the window's
                // source event, whichever arrived first: the window's final version does not depend on the
                // order matches reach the store. (Its `new` alert went out with the other; the update at the
                // close, same id, carries this one.)
                keyWindows[index].summary.add(keyWindows[index].first)
                keyWindows[index].first = match.withoutSummaryValues
            } else {
                keyWindows[index].summary.add(match)
            }
            for i in keyWindows.indices { keyWindows[i].record(offset, from: source) }
            return actions
        }
        let late = keyWindows.contains { match.eventTime < $0.start || ($0.closed && match.eventTime < $0.end) }
            || (!keyWindows.contains { !$0.closed } && streamTime != .min && match.eventTime + configuration.duration + configuration.grace < streamTime)
        var window = newWindow(for: match, key: key, offset: offset)
        if late {
            lateCount += 1
            // Its own id: another late match of the same time, or a closed window that started then, must
            // not be overwritten by it (ids are the rule, the group key and the window's start).
            window.groupKey = key + "#" + match.sourceIdentity
            actions.append(AlertAction(kind: .new, window: window, late: true))
            for i in keyWindows.indices { keyWindows[i].record(offset, from: source) }
            return actions
        }
        window.record(offset, from: source)
        for i in keyWindows.indices { keyWindows[i].record(offset, from: source) }
        keyWindows.append(window)
        earliestEnd = min(earliestEnd, window.end)
        actions.append(AlertAction(kind: .new, window: window, late: false))
        return actions
    }

    /// Moves the clocks for a record that opens no window (a step of an EQL sequence): stream time and
    /// activity move as for a match, so that the partition's idle and watermark handling stay one.
    public mutating func observe(eventTime: Int64, now: Int64) -> [AlertAction] {
        recordTime = max(recordTime, eventTime)
        lastActivity = now
        return advance(to: max(streamTime, eventTime))
    }

    /// Closes windows by wall clock on a quiet partition: stream time is taken to have moved on by the idle
    /// time beyond the idle timeout.
    public mutating func tick(now: Int64) -> [AlertAction] {
        guard lastActivity != .min, recordTime != .min, now - lastActivity > configuration.idleTimeout else { return [] }
        // From the records' own time, so that ticking again and again does not add the idle time twice.
        return advance(to: recordTime + (now - lastActivity))
    }

    /// The stream time an idle partition has reached at `now` (its records' time plus the idle time), when
    /// that is at least `step` past stream time; nil when it has not been idle for the idle timeout. A
    /// function of the clocks alone (persisted with the store), so a restored store decides the same.
    public func idleTarget(now: Int64, step: Int64 = 1_000) -> Int64? {
        guard lastActivity != .min, recordTime != .min, now - lastActivity > configuration.idleTimeout else { return nil }
        let target = recordTime + (now - lastActivity)
        return target >= streamTime + step ? target : nil
    }

    /// Moves stream time to a watermark read back from the partition's log (an idle tick made durable):
    /// closes what it leaves behind, as a record with that time would, without counting as activity.
    public mutating func advance(toWatermark time: Int64) -> [AlertAction] {
        advance(to: max(streamTime, time))
    }

    /// Closes every window (end of input, shutdown of a replay).
    public mutating func closeAll() -> [AlertAction] {
        advance(to: .max)
    }

    /// Moves stream time and closes the windows it leaves behind (past end + grace).
    private mutating func advance(to time: Int64) -> [AlertAction] {
        let horizon = time == .max ? Int64.max : time - configuration.grace
        streamTime = max(streamTime, time == .max ? streamTime : time)
        guard time == .max || earliestEnd < horizon else { return [] }
        var actions: [AlertAction] = []
        var nextEnd = Int64.max
        for key in windows.keys.sorted() {
            var keyWindows = windows[key]!
            var kept: [SuppressionWindow] = []
            for var window in keyWindows {
                if !window.closed, time == .max || window.end < horizon {
                    if window.suppressed > 0 { actions.append(AlertAction(kind: .update, window: window, late: false)) }
                    window.closed = true
                }
                // Closed windows stay one window length more (replay recognition), except at the very end.
                let dropAt = window.closed ? window.end + configuration.duration : window.end
                if time == .max || (window.closed && dropAt < horizon) { continue }
                kept.append(window)
                nextEnd = min(nextEnd, dropAt)
            }
            keyWindows = kept
            windows[key] = keyWindows.isEmpty ? nil : keyWindows
        }
        earliestEnd = nextEnd
        // Deterministic order: by window start, then key.
        return actions.sorted { ($0.window.start, $0.window.groupKey) < ($1.window.start, $1.window.groupKey) }
    }

    private func newWindow(for match: RuleMatch, key: String, offset: Int64) -> SuppressionWindow {
        var window = SuppressionWindow(
            groupKey: key, groupValues: match.groupValues, start: match.eventTime,
            end: match.eventTime + configuration.duration, first: match.withoutSummaryValues, suppressed: 0,
            summary: SuppressionSummary(), applied: [:])
        window.record(offset, from: match.sourcePartition)
        return window
    }

    // MARK: State for the changelog

    /// The windows of one key, to persist; nil when the key has none (a tombstone).
    public func state(of key: String) -> [SuppressionWindow]? { windows[key] }

    /// Restores a key's windows from the changelog.
    /// - Parameter movingClocks: let the windows move stream time (when the changelog has no clocks of its
    ///   own); a store restored with its persisted clocks takes them exactly instead.
    public mutating func restore(key: String, windows restored: [SuppressionWindow]?, movingClocks: Bool = true) {
        windows[key] = restored
        for window in restored ?? [] {
            earliestEnd = min(earliestEnd, window.closed ? window.end + configuration.duration : window.end)
            guard movingClocks else { continue }
            streamTime = max(streamTime, window.summary.lastSeen == .min ? window.start : max(window.start, window.summary.lastSeen))
            recordTime = max(recordTime, streamTime)
        }
    }

    /// Starts the idle clock after a restore whose changelog did not say when the partition was last active
    /// (a partition that stays quiet still closes its windows in time).
    public mutating func markActive(now: Int64) {
        if lastActivity == .min { lastActivity = now }
    }

    /// The partition's clocks: stream time, the records' own highest time, and the wall-clock time of the
    /// last new record. Persisted with the store's position, so that a restored store closes and judges
    /// lateness exactly as its previous owner would have.
    public struct Clocks: Sendable, Equatable {
        public var streamTime: Int64
        public var recordTime: Int64
        public var lastActivity: Int64
    }

    public var clocks: Clocks { Clocks(streamTime: streamTime, recordTime: recordTime, lastActivity: lastActivity) }

    /// Sets the clocks restored from the changelog: those of the position the store resumes from, even
    /// where windows written after it (a batch whose position was not written) are further on.
    public mutating func restore(clocks: Clocks) {
        streamTime = clocks.streamTime
        recordTime = clocks.recordTime
        lastActivity = clocks.lastActivity
    }
}
