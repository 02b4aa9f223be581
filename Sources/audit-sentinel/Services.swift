// `run`'s process as swift-service-lifecycle services: the pipeline, the HTTP endpoint, the second-signal watch, and their group.
import ArgumentParser
import Detection
import Foundation
import Kafka
import Logging
import Pipeline
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Runs the service group and returns the exit status. Services, in start order: the second-signal watch,
/// the HTTP endpoint, the pipeline. SIGTERM or SIGINT (trapped by the group) starts a graceful shutdown in
/// reverse order: the pipeline finishes its batch, acknowledges what is in flight, commits and leaves the
/// consumer group while the endpoint still answers (`/readyz`: stopping); then the endpoint closes. A
/// second signal exits at once (130); a shutdown longer than `shutdown.timeout` exits 1.
enum ServiceProcess {
    static func run(settings: Settings, pipeline: PipelineService, endpoint: HTTPEndpoint?, logger: Logger) -> Int32 {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: SecondSignalWatch(logger: logger))]
        if let endpoint { services.append(.init(service: EndpointService(endpoint: endpoint))) }
        // Whether it ends by a stop or a failure, the others are shut down gracefully after it.
        services.append(.init(service: pipeline, successTerminationBehavior: .gracefullyShutdownGroup,
                              failureTerminationBehavior: .gracefullyShutdownGroup))
        // The group's own lines (starting, each service's end) only when debugging.
        var groupLogger = logger
        groupLogger.logLevel = logger.logLevel <= .debug ? logger.logLevel : max(logger.logLevel, .notice)
        let configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: groupLogger)
        let group = ServiceGroup(configuration: configuration)
        let failure = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        // The command's thread waits; the group runs on the concurrency pool, the pipeline on its own thread.
        Task {
            do { try await group.run() } catch { failure.withLock { $0 = error } }
            done.signal()
        }
        done.wait()
        if let error = failure.withLock({ $0 }) {
            if let exit = error as? PipelineService.Exit { return exit.status }
            logger.critical("service group failed", metadata: ["error.message": "\(error)"])
            return 1
        }
        return pipeline.exitStatus
    }
}

/// The pipeline as a service. The pipeline is confined to one thread (librdkafka's poll and the stream
/// task are not shared), so `run()` hands the loop to a thread of its own and awaits its end; a graceful
/// shutdown only sets a flag the loop reads between batches, so a batch is never cut in half.
///
/// `@unchecked Sendable`: `runner` is touched only by the loop's thread (and by the HTTP thread through its
/// thread-safe `status`); the flags are atomics.
final class PipelineService: Service, @unchecked Sendable {
    struct Exit: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "the pipeline stopped with status \(status)" }
    }

    let settings: Settings
    let runner: PipelineRunner
    let metrics: PipelineMetrics
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    private let lastIteration = Atomic<Int64>(0)
    private let status = Atomic<Int32>(0)

    init(settings: Settings, pipeline: PipelineConfiguration, rules: RuleSet, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let provisioner: any TopicProvisioner
        do {
            provisioner = settings.createTopics
                ? try AdminTopicProvisioner(configuration: pipeline.kafka, logger: logger)
                : try ExistingTopicsProvisioner(configuration: pipeline.kafka, logger: logger)
        } catch let error as KafkaError {
            printError("configuration: kafka: \(error.message)")
            throw ExitCode(2)
        }
        let metrics = PipelineMetrics(ruleIDs: rules.rules.map(\.rule.ruleID))
        self.metrics = metrics
        runner = PipelineRunner(configuration: pipeline, rules: rules, provisioner: provisioner, logger: logger)
        runner.observer = { event in metrics.observe(event) }
    }

    var exitStatus: Int32 { status.load(ordering: .acquiring) }
    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    func run() async throws {
        let status = await withGracefulShutdownHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
                Thread.detachNewThread { [self] in continuation.resume(returning: loop()) }
            }
        } onGracefulShutdown: { [self] in
            requestStop()
        }
        self.status.store(status, ordering: .releasing)
        if status != 0 { throw Exit(status: status) }
    }

    /// From the group's graceful shutdown (or a failure elsewhere in it).
    private func requestStop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let signal = SecondSignalWatch.lastSignalName
        guard started.load(ordering: .acquiring) else {
            // Start-up (topics, metadata, the group) can wait on brokers for tens of seconds in librdkafka
            // calls that cannot be interrupted. Nothing was consumed, no offset or state is at stake: exit
            // now, with the status of a clean stop. The kernel closes the endpoint's sockets.
            logger.notice("stop signal during start-up: exiting before joining the group (nothing was consumed)", metadata: ["signal": "\(signal)"])
            _exit(0)
        }
        let timeout = settings.shutdownTimeoutMilliseconds
        logger.notice("stop signal: stopping", metadata: ["signal": "\(signal)", "timeout": "\(SettingsLoader.formatDuration(timeout))"])
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(timeout))) {
            FileHandle.standardError.write(Data("audit-sentinel: shutdown took longer than \(timeout) ms, exiting\n".utf8))
            _exit(1)
        }
    }

    private static func monotonicSeconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec)
    }

    /// The pipeline's thread: start-up, the loop, the graceful stop. Returns the exit status.
    private func loop() -> Int32 {
        // Start-up runs on a thread of its own, so that a stop request during it is honoured at once.
        let startDone = DispatchSemaphore(value: 0)
        let startFailure = Mutex<(any Error)?>(nil)
        Thread.detachNewThread { [self] in
            do { try runner.start() } catch { startFailure.withLock { $0 = error } }
            startDone.signal()
        }
        startDone.wait()
        if let error = startFailure.withLock({ $0 }) {
            logger.critical("cannot start the pipeline", metadata: ["error.message": "\(error)"])
            return 1
        }
        // From here a stop request is a graceful stop (requestStop reads this after setting `stopping`).
        started.store(true, ordering: .releasing)
        logger.info("running", metadata: ["application_id": "\(settings.applicationID)", "inputs": "\(settings.inputTopics)",
                                          "alerts": "\(settings.alertsTopic)", "guarantee": "\(settings.guarantee.rawValue)"])
        var status: Int32 = 0
        while !isStopping {
            lastIteration.store(Self.monotonicSeconds(), ordering: .relaxed)
            do {
                try runner.runOnce()
            } catch {
                logger.critical("pipeline failed", metadata: ["error.message": "\(error)"])
                status = 1
                break
            }
        }
        logger.info("stopping: finishing in-flight records, committing, leaving the group")
        do {
            try runner.stop()
        } catch {
            logger.error("stop was not clean", metadata: ["error.message": "\(error)"])
            status = 1
        }
        let counters = runner.snapshot()
        metrics.update(counters, openWindows: 0, pendingSequences: 0, aggregationPanes: 0, ready: false, state: runner.status.state)
        logger.info("stopped", metadata: ["records": "\(counters.recordsConsumed)", "matches": "\(counters.matches.values.reduce(0, +))",
                                          "alerts": "\(counters.alertsNew)", "updates": "\(counters.alertsUpdated)",
                                          "dead_lettered": "\(counters.deadLettered)"])
        return status
    }

    /// The HTTP endpoint's three paths (on the endpoint's tasks: only thread-safe state is read).
    func respond(_ path: String) -> HTTPEndpoint.Response {
        switch path {
        case "/metrics":
            let status = runner.status
            metrics.update(status.counterSnapshot, openWindows: status.openWindows, pendingSequences: status.pendingSequences,
                           aggregationPanes: status.aggregationPanes, ready: status.isReady && !isStopping,
                           state: isStopping && status.state == .running ? .stopping : status.state)
            return .init(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition())
        case "/healthz":
            // Alive while the loop turns: a batch (or a restore) may take long, two minutes without one is not.
            let stalled = Self.monotonicSeconds() - lastIteration.load(ordering: .relaxed) > 120
            return stalled ? .init(status: 503, body: Array("stalled\n".utf8)) : .init(status: 200, body: Array("ok\n".utf8))
        case "/readyz":
            // The reason, for an operator reading `kubectl describe pod` (the probe's output is shown there).
            if isStopping { return .init(status: 503, body: Array("not ready: stopping\n".utf8)) }
            guard let reason = runner.status.notReadyReason else { return .init(status: 200, body: Array("ready\n".utf8)) }
            return .init(status: 503, body: Array("not ready: \(reason)\n".utf8))
        default:
            return .init(status: 404, body: Array("not found\n".utf8))
        }
    }
}

/// The HTTP endpoint as a service: bound before the group starts (a bad address is a configuration error,
/// exit 2), serving until its turn in the graceful shutdown — after the pipeline's, so that probes and
/// scrapes are answered while the pipeline drains.
struct EndpointService: Service {
    let endpoint: HTTPEndpoint

    func run() async throws {
        try? await gracefulShutdown()
        await endpoint.stopServing()
    }
}

/// The group turns the first SIGTERM or SIGINT into a graceful shutdown and ignores repeats; an operator's
/// second signal means "now": exit 130 at once. Started first, so shut down last.
struct SecondSignalWatch: Service {
    let logger: Logger

    /// The last stop signal's name, for log lines ("SIGTERM" until one arrives).
    static var lastSignalName: String { lastStopSignalIsInterrupt.load(ordering: .acquiring) ? "SIGINT" : "SIGTERM" }

    func run() async throws {
        var seen = 0
        for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint).cancelOnGracefulShutdown() {
            lastStopSignalIsInterrupt.store(signal == .sigint, ordering: .releasing)
            seen += 1
            if seen >= 2 {
                FileHandle.standardError.write(Data("audit-sentinel: second stop signal, exiting now\n".utf8))
                _exit(130)
            }
        }
    }
}

private let lastStopSignalIsInterrupt = Atomic<Bool>(false)
