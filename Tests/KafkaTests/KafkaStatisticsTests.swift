import Foundation
import Kafka
import Synchronization
import Testing

/// librdkafka's statistics: our reading of its JSON (a report written here after STATISTICS.md's layout),
/// and live reports from a producer and a consumer on the mock cluster.
@Suite("librdkafka statistics")
struct KafkaStatisticsTests {
    @Test func aReportIsReducedToBrokersAndTheQueue() throws {
        let json = """
            {"name":"rdkafka#producer-1","type":"producer","msg_cnt":12,"msg_size":3456,
             "brokers":{
               "127.0.0.1:9092/1":{"name":"127.0.0.1:9092/1","nodeid":1,"source":"learned","state":"UP","outbuf_cnt":2,"waitresp_cnt":3,
                                   "req_timeouts":1,"txerrs":4,"rtt":{"min":100,"max":9000,"avg":1500,"p99":8000}},
               "GroupCoordinator":{"name":"GroupCoordinator","nodeid":1,"source":"logical","state":"UP","rtt":{"avg":7}},
               "127.0.0.1:9092/bootstrap":{"name":"127.0.0.1:9092/bootstrap","nodeid":-1,"source":"configured","state":"INIT"},
               "127.0.0.1:9093/2":{"name":"127.0.0.1:9093/2","nodeid":2,"source":"learned","state":"DOWN","rtt":{"avg":0,"p99":0}}},
             "topics":{"audit":{"partitions":{
               "0":{"partition":0,"fetch_state":"active","consumer_lag":42},
               "1":{"partition":1,"fetch_state":"active","consumer_lag":-1},
               "2":{"partition":2,"fetch_state":"none","consumer_lag":5},
               "-1":{"partition":-1,"fetch_state":"none","consumer_lag":-1}}}},
             "cgrp":{"state":"up","join_state":"steady","rebalance_cnt":3,"rebalance_age":1200}}
            """
        let statistics = try #require(Array(json.utf8).withUnsafeBytes { KafkaStatistics(json: $0) })
        #expect(statistics.clientType == "producer")
        #expect(statistics.queuedMessages == 12 && statistics.queuedBytes == 3456)
        #expect(statistics.brokers.map(\.name) == ["127.0.0.1:9092/1", "127.0.0.1:9093/2"], "no logical or bootstrap entries")
        let first = try #require(statistics.brokers.first)
        #expect(first.roundTripAverageMicroseconds == 1500 && first.roundTripP99Microseconds == 8000)
        #expect(first.requestsInFlight == 5 && first.state == "UP")
        #expect(statistics.brokers.last?.state == "DOWN")
        #expect(Array("not json".utf8).withUnsafeBytes { KafkaStatistics(json: $0) } == nil)
        #expect(Array("[1,2]".utf8).withUnsafeBytes { KafkaStatistics(json: $0) } == nil)
    }

    @Test func producerAndConsumerReportEveryInterval() throws {
        let cluster = try MockCluster(brokers: 1, logger: quietLogger)
        try cluster.createTopic("stats", partitions: 2)
        let reports = Mutex<[KafkaStatistics]>([])
        let record: @Sendable (KafkaStatistics) -> Void = { report in reports.withLock { $0.append(report) } }
        let common = KafkaConfiguration(["bootstrap.servers": cluster.bootstrapServers, "statistics.interval.ms": "100"])
        let producer = try KafkaProducer(configuration: common, logger: quietLogger, onStatistics: record)
        for index in 0..<10 { try producer.send(ProducerMessage(topic: "stats", key: "k\(index)", value: "v")) }
        try producer.flush(timeout: .seconds(10))
        let consumer = try KafkaConsumer(configuration: common.merging(["group.id": "stats", "auto.offset.reset": "earliest"]),
                                         logger: quietLogger, onStatistics: record)
        try consumer.subscribe(topics: ["stats"])
        let deadline = ContinuousClock.now + .seconds(20)
        var consumed = 0
        while ContinuousClock.now < deadline {
            consumed += try consumer.poll(maxMessages: 100, timeout: .milliseconds(100)) { $0.count }
            let seen = reports.withLock { $0 }
            if consumed == 10, seen.contains(where: { $0.clientType == "consumer" && !$0.brokers.isEmpty }) { break }
        }
        try consumer.close()
        let seen = reports.withLock { $0 }
        let producerReports = seen.filter { $0.clientType == "producer" }
        let consumerReports = seen.filter { $0.clientType == "consumer" }
        #expect(producerReports.count >= 2, "statistics every 100 ms from the producer's poll thread")
        #expect(producerReports.last?.brokers.count == 1)
        #expect(producerReports.last?.brokers.first?.state == "UP")
        #expect(consumed == 10)
        #expect(consumerReports.last?.brokers.map(\.nodeID) == [1], "the consumer's reports come from inside its poll")
        #expect(producerReports.last?.queuedMessages == 0, "flushed: nothing queued")
    }
}
