// The service's Prometheus metrics: the pipeline's counters, its events as histograms, librdkafka's statistics, process_*.
import AuditEvents
import Foundation
import Kafka
import Pipeline
import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The pipeline's counters as Prometheus metrics. Counters advance by the difference between snapshots, so
/// the pipeline keeps plain numbers (no metric calls per record) and the registry stays monotonic. Every
/// series whose labels are known at start (each rule, each decode-error reason, each state) is registered at
/// zero, so that dashboards and `rate()` see it from the first scrape.
final class PipelineMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let last = Mutex(PipelineCounters())
    private let lagGauges = Mutex<[TopicPartition: Gauge]>([:])
    private let processCPU: Counter
    private let lastCPUSeconds = Mutex<Double>(0)

    private let alertLatency: DurationHistogram
    private let commitLatency: DurationHistogram
    private let rebalanceDuration: DurationHistogram
    private let restoreDuration: DurationHistogram

    /// Decode-error reasons: the decoder's own, and a match record of the repartition topic that cannot be read.
    static let decodeErrorReasons = AuditDecodeError.Reason.allCases.map(\.rawValue) + ["unreadable_match"]

    init(ruleIDs: [String] = []) {
        // Which build is running: a constant 1, labelled (the Prometheus convention for build information).
        registry.makeGauge(descriptor: Self.name("build_info", "The running build: version and librdkafka at run time"),
                           labels: [("version", AuditSentinelVersion.current), ("librdkafka", librdkafkaVersion)]).set(to: 1)
        processCPU = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "process", metricName: "cpu", unitName: "seconds_total",
                                                                           helpText: "User and system CPU time spent, in seconds"))
        let registry = registry
        func histogram(_ metric: String, _ help: String, _ buckets: [Duration]) -> DurationHistogram {
            registry.makeDurationHistogram(descriptor: Self.name(metric, unit: "seconds", help), buckets: buckets)
        }
        let fast: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)]
        let slow: [Duration] = [.milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
                                .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300)]
        alertLatency = histogram("alert_latency", "From a match's event.ingested to its alert's acknowledgement by the broker",
                                 [.milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                  .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60)])
        commitLatency = histogram("commit_latency", "From an offset commit's request to the group coordinator's answer (or a transaction's commit)", fast)
        rebalanceDuration = histogram("rebalance_duration", "From a rebalance's first callback (or the subscription) to every assigned partition restored and positioned", slow)
        restoreDuration = histogram("restore_duration", "Reading changelog partitions back into state stores, per restore", slow)
        gauge("kafka_producer_queue_messages", "Outputs in the producer's queue, waiting for delivery or its report").set(to: 0)
        gauge("kafka_producer_queue_bytes", "Bytes of outputs in the producer's queue").set(to: 0)
        update(PipelineCounters(), openWindows: 0, pendingSequences: 0, aggregationPanes: 0, ready: false, state: .starting, ruleIDs: ruleIDs)
    }

    static func name(_ metric: String, unit: String = "", _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "audit_sentinel", metricName: metric, unitName: unit, helpText: help)
    }

    private func counter(_ metric: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
        registry.makeCounter(descriptor: Self.name(metric, unit: "total", help), labels: labels)
    }

    private func gauge(_ metric: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: Self.name(metric, help), labels: labels)
    }

    /// The pipeline's events: histograms, and librdkafka's statistics as gauges.
    func observe(_ event: PipelineEvent) {
        switch event {
        case .alertAcknowledged(let milliseconds): alertLatency.record(.milliseconds(milliseconds))
        case .committed(let latency, _): commitLatency.record(latency)
        case .rebalanced(let duration, _): rebalanceDuration.record(duration)
        case .restored(let duration, _, _): restoreDuration.record(duration)
        case .statistics(let statistics): record(statistics)
        }
    }

    private func record(_ statistics: KafkaStatistics) {
        let client = ("client", statistics.clientType)
        if statistics.clientType == "producer" {
            gauge("kafka_producer_queue_messages", "Outputs in the producer's queue, waiting for delivery or its report").set(to: Double(statistics.queuedMessages))
            gauge("kafka_producer_queue_bytes", "Bytes of outputs in the producer's queue").set(to: Double(statistics.queuedBytes))
        }
        for broker in statistics.brokers {
            let labels = [client, ("broker", broker.name)]
            gauge("kafka_broker_rtt_average_seconds", "Average request round trip to the broker over the last statistics interval", labels)
                .set(to: Double(broker.roundTripAverageMicroseconds) / 1e6)
            gauge("kafka_broker_rtt_p99_seconds", "99th percentile of the request round trip to the broker over the last statistics interval", labels)
                .set(to: Double(broker.roundTripP99Microseconds) / 1e6)
            gauge("kafka_broker_requests_in_flight", "Requests queued for or awaiting an answer from the broker", labels)
                .set(to: Double(broker.requestsInFlight))
            gauge("kafka_broker_up", "1 while the connection to the broker is up", labels).set(to: broker.state == "UP" ? 1 : 0)
        }
    }

    /// Brings the registry up to date with a snapshot of the pipeline.
    func update(_ now: PipelineCounters, openWindows: Int, pendingSequences: Int, aggregationPanes: Int = 0, ready: Bool, state: PipelineState, ruleIDs: [String] = []) {
        let before = last.withLock { previous in
            defer { previous = now }
            return previous
        }
        func advance(_ metric: String, _ help: String, _ labels: [(String, String)] = [], _ new: Int, _ old: Int) {
            let counter = counter(metric, help, labels)
            if new > old { counter.increment(by: Int64(new - old)) }
        }
        advance("records_consumed", "Records read from the input and internal topics", [], now.recordsConsumed, before.recordsConsumed)
        advance("events_decoded", "Audit events decoded from input records", [], now.eventsDecoded, before.eventsDecoded)
        advance("prefilter_rejected", "Records the rules' prefilter proved unable to match", [], now.prefilterRejected, before.prefilterRejected)
        for reason in Set(Self.decodeErrorReasons).union(now.decodeErrors.keys) {
            advance("decode_errors", "Undecodable records or events, by reason", [("reason", reason)], now.decodeErrors[reason] ?? 0, before.decodeErrors[reason] ?? 0)
        }
        advance("dead_letter_records", "Records written to the dead-letter topic", [], now.deadLettered, before.deadLettered)
        for rule in Set(ruleIDs).union(now.matches.keys).union(now.alertsNewByRule.keys).union(now.alertsUpdatedByRule.keys) {
            advance("matches", "Events that matched a rule", [("rule_id", rule)], now.matches[rule] ?? 0, before.matches[rule] ?? 0)
            advance("alerts", "Alert documents published", [("rule_id", rule), ("kind", "new")], now.alertsNewByRule[rule] ?? 0, before.alertsNewByRule[rule] ?? 0)
            advance("alerts", "Alert documents published", [("rule_id", rule), ("kind", "update")],
                    now.alertsUpdatedByRule[rule] ?? 0, before.alertsUpdatedByRule[rule] ?? 0)
        }
        advance("suppressed_matches", "Matches folded into an open alert instead of alerting", [], now.suppressedMatches, before.suppressedMatches)
        advance("late_matches", "Matches older than their window's grace period", [], now.lateMatches, before.lateMatches)
        advance("duplicate_matches", "Matches recognized as replays of ones already applied", [], now.duplicateMatches, before.duplicateMatches)
        advance("fenced_records", "Records of a partition whose assignment changed during their poll, read again", [], now.fencedRecords, before.fencedRecords)
        advance("produce_retries", "Outputs resent after a failed delivery", [], now.produceRetries, before.produceRetries)
        advance("commits", "Offset commits (transactions: their commits), by result; a failed one means records may be read again",
                [("result", "committed")], now.commitsSucceeded, before.commitsSucceeded)
        advance("commits", "Offset commits (transactions: their commits), by result; a failed one means records may be read again",
                [("result", "failed")], now.commitRetries, before.commitRetries)
        let polls = "Consumer polls that returned records, by whether the batch was full (mostly full: processing sets the pace)"
        advance("polls", polls, [("batch", "full")], now.fullPolls, before.fullPolls)
        advance("polls", polls, [("batch", "partial")], now.pollsWithRecords - now.fullPolls, before.pollsWithRecords - before.fullPolls)
        advance("rebalances", "Consumer-group rebalance callbacks (assignments, revocations, losses)", [], now.rebalances, before.rebalances)
        advance("restored_keys", "State keys restored from changelogs", [], now.restoredKeys, before.restoredKeys)
        advance("restore_failures", "State restores that failed (retried)", [], now.restoreFailures, before.restoreFailures)
        gauge("open_windows", "Suppression windows open on this instance").set(to: Double(openWindows))
        gauge("pending_sequences", "EQL sequences waiting for their next step on this instance").set(to: Double(pendingSequences))
        gauge("aggregation_panes", "Panes of partial aggregates aggregating ES|QL rules hold on this instance").set(to: Double(aggregationPanes))
        gauge("ready", "1 when partitions are assigned, their state restored and every input topic exists").set(to: ready ? 1 : 0)
        for candidate in PipelineState.allCases {
            gauge("state", "The member's lifecycle state: 1 for the current one", [("state", candidate.rawValue)]).set(to: candidate == state ? 1 : 0)
        }
        lagGauges.withLock { gauges in
            for (partition, lag) in now.lag {
                let gauge = gauges[partition] ?? gauge("consumer_lag", "Records behind the end of an assigned partition (input and internal topics)",
                                                       [("topic", partition.topic), ("partition", "\(partition.partition)")])
                gauges[partition] = gauge
                gauge.set(to: Double(lag))
            }
            for (partition, gauge) in gauges where now.lag[partition] == nil {
                registry.unregisterGauge(gauge)
                gauges.removeValue(forKey: partition)
            }
        }
    }

    func exposition() -> [UInt8] {
        updateProcessMetrics()
        return registry.emitToBuffer()
    }

    /// The standard `process_*` series (as Prometheus client libraries export them), read from /proc.
    func updateProcessMetrics() {
        guard let sample = ProcessSample.read() else { return }
        let delta = lastCPUSeconds.withLock { last in
            defer { last = max(last, sample.cpuSeconds) }
            return sample.cpuSeconds - last
        }
        if delta > 0 { processCPU.increment(by: delta) }
        func process(_ metric: String, _ help: String, _ value: Double) {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "process", metricName: metric, unitName: "", helpText: help)).set(to: value)
        }
        process("resident_memory_bytes", "Resident memory size in bytes", sample.residentBytes)
        process("virtual_memory_bytes", "Virtual memory size in bytes", sample.virtualBytes)
        process("open_fds", "Open file descriptors", sample.openFileDescriptors)
        process("max_fds", "The limit of open file descriptors", sample.maxFileDescriptors)
        process("start_time_seconds", "Start time of the process since the Unix epoch, in seconds", sample.startTimeSeconds)
    }
}

/// One reading of the process's resources from Linux's /proc.
struct ProcessSample {
    var cpuSeconds: Double
    var residentBytes: Double
    var virtualBytes: Double
    var openFileDescriptors: Double
    var maxFileDescriptors: Double
    var startTimeSeconds: Double

    static func read() -> ProcessSample? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let nameEnd = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15, starttime 22.
        let fields = stat[stat.index(after: nameEnd)...].split(separator: " ")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        guard fields.count > 19, let user = Double(fields[11]), let kernel = Double(fields[12]), let started = Double(fields[19]),
              let bootLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(bootLine.dropFirst(6)) else { return nil }
        let memory = statm.split(separator: " ").compactMap { Double($0) }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return ProcessSample(cpuSeconds: (user + kernel) / ticks, residentBytes: (memory.count > 1 ? memory[1] : 0) * pageSize,
                             virtualBytes: (memory.first ?? 0) * pageSize, openFileDescriptors: Double(descriptors),
                             maxFileDescriptors: Double(limit.rlim_cur), startTimeSeconds: boot + started / ticks)
    }
}
