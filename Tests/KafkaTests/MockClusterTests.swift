import Foundation
import Kafka
import Synchronization
import Testing

/// The `Kafka` module against librdkafka's in-process mock cluster: no external broker.
@Suite("Mock cluster broker")
struct MockClusterTests {
    @Test func roundTripWithKeysHeadersAndTimestamps() async throws {
        try await BrokerScenarios.roundTrip(.mock())
    }

    @Test(arguments: [KafkaConfiguration.AssignmentStrategy.range, .cooperativeSticky])
    func groupRebalanceLosesAndDuplicatesNothing(strategy: KafkaConfiguration.AssignmentStrategy) throws {
        try BrokerScenarios.groupRebalance(.mock(), strategy: strategy)
    }

    @Test func resumesFromCommittedOffsets() throws {
        try BrokerScenarios.resumeFromCommitted(.mock())
    }

    @Test func partitionEOFAndPauseResumeAndSeek() throws {
        let broker = try TestBroker.mock()
        let topic = uniqueName("eof")
        try broker.createTopic(topic, 1)
        try produce(broker, topic: topic, count: 10)
        let consumer = try KafkaConsumer(
            configuration: broker.consumerConfiguration(group: uniqueName("g"), ["enable.partition.eof": "true"]),
            logger: quietLogger)
        try consumer.subscribe(topics: [topic])
        var notices: [ConsumerNotice] = []
        var values: [String] = []
        let partition = TopicPartition(topic, 0)
        let deadline = ContinuousClock.now + .seconds(20)
        while !notices.contains(.partitionEOF(partition, offset: 10)), ContinuousClock.now < deadline {
            try consumer.poll(timeout: .milliseconds(100)) { batch in
                notices += batch.notices
                values += batch.map { String(decoding: $0.payload, as: UTF8.self) }
            }
        }
        #expect(values == (0..<10).map { "value-\($0)" })
        #expect(notices.contains(.partitionEOF(partition, offset: 10)))
        #expect(try consumer.lag() == [partition: 0])
        #expect(try consumer.watermarks(partition, timeout: .seconds(5))?.high == 10)

        // Paused: new records are not returned.
        try consumer.pause([partition])
        try produce(broker, topic: topic, count: 5, from: 10)
        let whilePaused = try consume(consumer, until: { _ in false }, timeout: .seconds(1))
        #expect(whilePaused.isEmpty)
        try consumer.resume([partition])
        let afterResume = try consume(consumer, until: { $0.count >= 5 })
        #expect(afterResume.map(\.value) == (10..<15).map { "value-\($0)" })

        // Seek back re-reads from the given offset.
        try consumer.seek([TopicPartitionOffset(topic, 0, offset: 3)])
        let reread = try consume(consumer, until: { $0.count >= 12 })
        #expect(reread.first?.offset == 3)
        #expect(reread.count == 12)
        try consumer.close()
    }

    @Test func deliveryFailuresAreReportedPerRecord() async throws {
        let broker = try TestBroker.mock()
        let topic = uniqueName("fail")
        try broker.createTopic(topic, 1)
        let producer = try KafkaProducer(
            configuration: broker.producerConfiguration(["message.timeout.ms": "2000"]), logger: quietLogger)
        // Partition 7 of a one-partition topic: known only once metadata arrives, so reported per record.
        do {
            _ = try await producer.send(ProducerMessage(topic: topic, partition: 7, value: "x"))
            Issue.record("sending to a missing partition succeeded")
        } catch {
            #expect(error.code == KafkaError.Code(rawValue: -190))  // _UNKNOWN_PARTITION
            #expect(error.name == "_UNKNOWN_PARTITION")
        }
        let ok = try await producer.send(ProducerMessage(topic: topic, value: "fine"))
        #expect(ok.isSuccess && ok.offset == 0)
    }

    @Test func producerRidesOutBrokersGoingDownAndUp() throws {
        let broker = try TestBroker.mock(brokers: 3)
        let cluster = try #require(broker.owner as? MockCluster)
        let topic = uniqueName("outage")
        try broker.createTopic(topic, 3)
        let delivered = Mutex<[DeliveryReport]>([])
        let producer = try KafkaProducer(
            configuration: broker.producerConfiguration(["message.timeout.ms": "60000"]), logger: quietLogger
        ) { report in delivered.withLock { $0.append(report) } }
        try producer.send(ProducerMessage(topic: topic, key: "warm-up", value: "0"))
        try producer.flush(timeout: .seconds(10))

        try cluster.setBrokerDown()
        for index in 1...20 { try producer.send(ProducerMessage(topic: topic, key: "k\(index)", value: "\(index)")) }
        Thread.sleep(forTimeInterval: 1.5)
        #expect(producer.outstandingCount == 20, "nothing can be delivered while every broker is down")
        try cluster.setBrokerUp()
        try producer.flush(timeout: .seconds(30))
        let reports = delivered.withLock { $0 }
        #expect(reports.count == 21)
        #expect(reports.allSatisfy { $0.isSuccess })
    }

    @Test func idempotentProducerRetriesInjectedErrorsWithoutDuplicates() throws {
        let broker = try TestBroker.mock()
        let cluster = try #require(broker.owner as? MockCluster)
        let topic = uniqueName("retry")
        try broker.createTopic(topic, 1)
        cluster.pushRequestErrors(apiKey: MockCluster.ApiKey.produce, [.notEnoughReplicas, .notEnoughReplicas, .requestTimedOut])
        try produce(broker, topic: topic, count: 50)
        let consumer = try KafkaConsumer(configuration: broker.consumerConfiguration(group: uniqueName("g")), logger: quietLogger)
        try consumer.subscribe(topics: [topic])
        let received = try consume(consumer, until: { $0.count >= 50 }, timeout: .seconds(20))
        // Wait a little for anything extra a duplicate would add.
        let extra = try consume(consumer, until: { _ in false }, timeout: .milliseconds(500))
        try consumer.close()
        #expect((received + extra).map(\.value) == (0..<50).map { "value-\($0)" })
    }

    @Test func transactionCallSequence() throws {
        let broker = try TestBroker.mock()
        let input = uniqueName("in")
        let output = uniqueName("out")
        try broker.createTopic(input, 1)
        try broker.createTopic(output, 1)
        try produce(broker, topic: input, count: 5)

        let group = uniqueName("g")
        let consumer = try KafkaConsumer(configuration: broker.consumerConfiguration(group: group), logger: quietLogger)
        try consumer.subscribe(topics: [input])
        let records = try consume(consumer, until: { $0.count >= 5 }, store: false)
        let producer = try KafkaProducer(
            configuration: broker.producerConfiguration(["transactional.id": uniqueName("txn")]), logger: quietLogger)
        #expect(producer.isTransactional)
        try producer.initTransactions(timeout: .seconds(20))

        // Committed transaction: outputs plus the consumer's offsets.
        try producer.beginTransaction()
        for record in records { try producer.send(ProducerMessage(topic: output, value: "alert-for-\(record.value)")) }
        try producer.sendOffsetsToTransaction([TopicPartitionOffset(input, 0, offset: 5)], groupMetadata: consumer.groupMetadata())
        try producer.commitTransaction()

        // Aborted transaction.
        try producer.beginTransaction()
        try producer.send(ProducerMessage(topic: output, value: "never"))
        try producer.abortTransaction()

        // A commit outside a transaction is a state error, not a crash.
        #expect(throws: KafkaError.self) { try producer.commitTransaction() }
        let plain = try KafkaProducer(configuration: broker.producerConfiguration(), logger: quietLogger)
        #expect(throws: KafkaError.self) { try plain.beginTransaction() }
        try consumer.close()

        let reader = try KafkaConsumer(configuration: broker.consumerConfiguration(group: uniqueName("reader")), logger: quietLogger)
        try reader.subscribe(topics: [output])
        let alerts = try consume(reader, until: { $0.count >= 5 })
        #expect(Array(alerts.map(\.value).prefix(5)) == records.map { "alert-for-\($0.value)" })
        try reader.close()
    }

    @Test func metadataListsBrokersAndTopics() throws {
        let broker = try TestBroker.mock(brokers: 3)
        let topic = uniqueName("meta")
        try broker.createTopic(topic, 6)
        let admin = try KafkaAdmin(configuration: broker.common, logger: quietLogger)
        let metadata = try admin.metadata(topic: topic)
        #expect(metadata.brokers.count == 3)
        let described = try #require(metadata.topic(topic))
        #expect(described.partitions.count == 6)
        #expect(described.partitions.allSatisfy { (1...3).contains($0.leader) })
    }
}

/// Configuration and errors need no broker at all.
@Suite("Configuration and errors")
struct ConfigurationTests {
    @Test func unknownPropertyIsNamed() {
        let configuration = KafkaConfiguration(["bootstrap.servers": "127.0.0.1:1", "no.such.property": "1"])
        let error = #expect(throws: KafkaError.self) { try KafkaProducer(configuration: configuration, logger: quietLogger) }
        #expect(error?.property == "no.such.property")
        #expect(error?.message.contains("no.such.property") == true)
        #expect(error?.message.contains("unknown property") == true)
    }

    @Test func invalidValueIsNamedWithLibrdkafkasReason() {
        let configuration = KafkaConfiguration(["group.id": "g", "session.timeout.ms": "soon"])
        let error = #expect(throws: KafkaError.self) { try KafkaConsumer(configuration: configuration, logger: quietLogger) }
        #expect(error?.property == "session.timeout.ms")
        #expect(error?.message.contains("\"soon\"") == true)
    }

    @Test func secretsAreRedactedInDescriptionsAndErrors() {
        let configuration = KafkaConfiguration([
            "bootstrap.servers": "broker:9093", "security.protocol": "sasl_ssl", "sasl.mechanisms": "PLAIN",
            "sasl.username": "sentinel", "sasl.password": "hunter2", "ssl.key.password": "s3cret",
        ])
        #expect(!configuration.description.contains("hunter2"))
        #expect(!configuration.description.contains("s3cret"))
        #expect(configuration.description.contains("sasl.username=sentinel"))
        #expect(configuration.redacted["sasl.password"] == KafkaConfiguration.redactedValue)

        // A property librdkafka rejects never echoes a secret value.
        let bad = KafkaConfiguration(["sasl.password": "hunter2", "ssl.key.password": "s3cret", "ssl.key.location": "/nonexistent/key.pem", "security.protocol": "ssl"])
        let error = #expect(throws: KafkaError.self) { try KafkaProducer(configuration: bad, logger: quietLogger) }
        #expect(error.map { !"\($0)".contains("hunter2") && !"\($0)".contains("s3cret") } == true)
    }

    @Test func passThroughPropertiesAreAccepted() throws {
        // Security and tuning properties librdkafka knows pass through unchanged.
        let configuration = KafkaConfiguration([
            "bootstrap.servers": "127.0.0.1:1", "security.protocol": "sasl_plaintext", "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": "u", "sasl.password": "p", "queue.buffering.max.messages": "200000", "compression.type": "lz4",
        ])
        let producer = try KafkaProducer(configuration: configuration, logger: quietLogger)
        #expect(producer.name.hasPrefix("rdkafka#producer"))
    }

    @Test func consumerNeedsAGroup() {
        let error = #expect(throws: KafkaError.self) {
            try KafkaConsumer(configuration: KafkaConfiguration(["bootstrap.servers": "127.0.0.1:1"]), logger: quietLogger)
        }
        #expect(error?.property == "group.id")
    }

    @Test func errorsCarryNamesAndClasses() {
        let error = KafkaError(code: .rebalanceInProgress)
        #expect(error.name == "REBALANCE_IN_PROGRESS")
        #expect(!error.message.isEmpty)
        #expect(KafkaError.Code.partitionEOF.name == "_PARTITION_EOF")
        #expect("\(KafkaError(code: .timedOut, isRetriable: true))".contains("[retriable]"))
    }

    @Test func librdkafkaVersionIsReported() {
        #expect(librdkafkaVersion.split(separator: ".").count >= 3)
    }
}
