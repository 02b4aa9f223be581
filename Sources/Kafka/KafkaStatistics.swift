// librdkafka's statistics (its `statistics.interval.ms` JSON), reduced to what an operator graphs.
import Foundation

/// One statistics report of a client, emitted every `statistics.interval.ms` from inside the client's
/// poll (the producer's poll thread, the consumer's `poll`). Only the fields an operator's dashboard needs
/// are kept (lag and the group's state the pipeline knows better itself); the JSON's field names are
/// librdkafka's (STATISTICS.md).
public struct KafkaStatistics: Sendable, Equatable {
    public struct Broker: Sendable, Equatable {
        /// "host:port/id" (librdkafka's broker name); bootstrap-only, logical and internal entries are left out.
        public var name: String
        public var nodeID: Int
        /// INIT, DOWN, CONNECT, AUTH, APIVERSION_QUERY, AUTH_HANDSHAKE, UP, UPDATE.
        public var state: String
        /// Round trip of requests in the last interval, in microseconds (0 when none was sent).
        public var roundTripAverageMicroseconds: Int64
        public var roundTripP99Microseconds: Int64
        /// Requests waiting to be sent plus requests sent and not yet answered.
        public var requestsInFlight: Int64
    }

    /// "producer" or "consumer".
    public var clientType: String
    /// Messages and bytes in the producer's queue (waiting for delivery or its report).
    public var queuedMessages: Int64
    public var queuedBytes: Int64
    public var brokers: [Broker]

    /// Parses one report; nil when the text is not librdkafka's statistics object.
    public init?(json: UnsafeRawBufferPointer) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
              let type = object["type"] as? String else { return nil }
        func integer(_ value: Any?) -> Int64? { (value as? NSNumber)?.int64Value }
        clientType = type
        queuedMessages = integer(object["msg_cnt"]) ?? 0
        queuedBytes = integer(object["msg_size"]) ?? 0
        var brokers: [Broker] = []
        for case let broker as [String: Any] in (object["brokers"] as? [String: Any] ?? [:]).values {
            // Logical brokers (the group coordinator's alias) and the internal one repeat or have no connection.
            let nodeID = Int(integer(broker["nodeid"]) ?? -1)
            let source = broker["source"] as? String ?? ""
            guard nodeID >= 0, source != "logical", source != "internal", let name = broker["name"] as? String else { continue }
            let rtt = broker["rtt"] as? [String: Any] ?? [:]
            brokers.append(Broker(
                name: name, nodeID: nodeID, state: broker["state"] as? String ?? "",
                roundTripAverageMicroseconds: integer(rtt["avg"]) ?? 0, roundTripP99Microseconds: integer(rtt["p99"]) ?? 0,
                requestsInFlight: (integer(broker["outbuf_cnt"]) ?? 0) + (integer(broker["waitresp_cnt"]) ?? 0)))
        }
        self.brokers = brokers.sorted { $0.nodeID < $1.nodeID }
    }
}
