import ArgumentParser
import Detection
import Foundation
import Kafka
import Logging
import Pipeline
import Synchronization

/// `audit-sentinel run`: the service. Configuration from the file, the environment and flags; the pipeline
/// against the configured brokers; `/metrics`, `/healthz`, `/readyz`; a graceful stop on SIGTERM or SIGINT.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the detection pipeline against Kafka (the service).",
        discussion: """
            Configuration comes from a TOML file (--config, else $AUDIT_SENTINEL_CONFIG, else \
            Config/audit-sentinel.toml when it exists), then AUDIT_SENTINEL_* environment variables, then flags; \
            later layers win. Any key can be set with --set key=value. See Config/audit-sentinel.toml for every key.
            SIGTERM or SIGINT stops gracefully: no new records are fetched, outputs in flight are acknowledged, \
            offsets committed, the group left; a second signal exits at once.
            Exit codes: 0 stopped cleanly, 1 a runtime failure (e.g. a fatal Kafka error, shutdown timeout), \
            2 invalid configuration or rules, 130 a second signal.
            """)

    @Option(name: .long, help: "Configuration file (TOML).")
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Set any configuration key (repeatable).", valueName: "key=value"))
    var assignments: [String] = []

    @Option(name: .long, help: "Broker list (kafka.bootstrap_servers).")
    var brokers: String?

    @Option(name: .long, help: "Input topic (topics.input; repeatable).")
    var input: [String] = []

    @Option(name: .customLong("alerts-topic"), help: "Alerts topic (topics.alerts).")
    var alertsTopic: String?

    @Option(name: .customLong("application-id"), help: "Consumer group and internal-topic prefix (application_id).")
    var applicationID: String?

    @Option(name: .long, help: "Rule file or directory (rules.paths; repeatable).")
    var rules: [String] = []

    @Option(name: .long, help: "Alert format: ecs or ocsf (output.format).")
    var format: String?

    @Option(name: .long, help: "at_least_once or exactly_once (processing.guarantee).")
    var guarantee: String?

    @Option(name: .customLong("http-listen"), help: "Metrics and health endpoint, host:port (http.listen).")
    var httpListen: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (log.level).")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "text or json (log.format).")
    var logFormat: String?

    @Flag(name: .customLong("print-config"), help: "Print the effective configuration (secrets redacted) and exit.")
    var printConfig = false

    /// Flags as `key=value` overrides, in precedence order (`--set` last).
    func overrides() throws(SettingsError) -> [(key: String, value: String, flag: String)] {
        var result: [(String, String, String)] = []
        if let brokers { result.append(("kafka.bootstrap_servers", brokers, "--brokers")) }
        if !input.isEmpty { result.append(("topics.input", input.joined(separator: ","), "--input")) }
        if let alertsTopic { result.append(("topics.alerts", alertsTopic, "--alerts-topic")) }
        if let applicationID { result.append(("application_id", applicationID, "--application-id")) }
        if !rules.isEmpty { result.append(("rules.paths", rules.joined(separator: ","), "--rules")) }
        if let format { result.append(("output.format", format, "--format")) }
        if let guarantee { result.append(("processing.guarantee", guarantee, "--guarantee")) }
        if let httpListen { result.append(("http.listen", httpListen, "--http-listen")) }
        if let logLevel { result.append(("log.level", logLevel, "--log-level")) }
        if let logFormat { result.append(("log.format", logFormat, "--log-format")) }
        for assignment in assignments {
            guard let equals = assignment.firstIndex(of: "=") else {
                throw SettingsError(key: assignment, message: "--set takes key=value")
            }
            result.append((String(assignment[..<equals]), String(assignment[assignment.index(after: equals)...]), "--set"))
        }
        return result
    }

    /// The configuration file to read: explicit, from the environment, or the default when it exists.
    static func configFile(_ explicit: String?, environment: [String: String]) -> String? {
        if let explicit { return explicit }
        if let fromEnvironment = environment["AUDIT_SENTINEL_CONFIG"], !fromEnvironment.isEmpty { return fromEnvironment }
        let fallback = "Config/audit-sentinel.toml"
        return FileManager.default.fileExists(atPath: fallback) ? fallback : nil
    }

    func run() throws {
        CrashReports.limitBeforeSecretsAreRead()
        let environment = ProcessInfo.processInfo.environment
        var loader: SettingsLoader
        let settings: Settings
        // (A Result, not do/catch: Swift 6.3.1 crashes compiling typed catches here.)
        switch Result(catching: { () throws(SettingsError) in
            let loader = try SettingsLoader(file: Self.configFile(config, environment: environment), environment: environment, overrides: overrides())
            return (loader, try loader.settings())
        }) {
        case .success(let loaded):
            (loader, settings) = loaded
        case .failure(let error):
            printError(error.description)
            throw ExitCode(2)
        }
        if printConfig {
            loader.fillDefaults()
            print(loader.render())
            return
        }
        // Signals are the service group's (ServiceProcess); only the mask and SIGPIPE are set up here.
        StopSignals.prepareMask()
        let level = Logger.Level(rawValue: settings.logLevel) ?? .info
        let format = SentinelLogHandler.Format(rawValue: settings.logFormat) ?? .text
        LoggingSystem.bootstrap { label in SentinelLogHandler(label: label, format: format, level: level) }
        var logger = Logger(label: "audit-sentinel")
        logger.logLevel = level
        for warning in loader.warnings { logger.warning("configuration warning", metadata: ["warning": "\(warning)"]) }

        let ruleSet = try loadRuleSet(settings.rulePaths)
        var pipelineConfiguration: PipelineConfiguration
        switch Result(catching: { () throws(SettingsError) in try settings.pipelineConfiguration(productVersion: AuditSentinelVersion.current) }) {
        case .success(let configuration): pipelineConfiguration = configuration
        case .failure(let error):
            printError(error.description)
            throw ExitCode(2)
        }
        pipelineConfiguration.suppressionOverrides = settings.suppressionOverrides(for: ruleSet.rules.map(\.rule))
        let service = try PipelineService(settings: settings, pipeline: pipelineConfiguration, rules: ruleSet, logger: logger)
        var endpoint: HTTPEndpoint?
        if settings.httpEnabled {
            do {
                endpoint = try HTTPEndpoint(listen: settings.httpListen) { [service] path in service.respond(path) }
                logger.info("serving /metrics, /healthz and /readyz", metadata: ["url.full": "http://\(settings.httpListen)"])
            } catch {
                logger.critical("cannot serve the HTTP endpoint", metadata: ["error.message": "\(error)"])
                throw ExitCode(2)
            }
        }
        let status = ServiceProcess.run(settings: settings, pipeline: service, endpoint: endpoint, logger: logger)
        if status != 0 { throw ExitCode(status) }
    }
}

/// SIGTERM and SIGINT for the commands that are not services (`generate`, `demo`, `replay`, `match`): the first asks the process to stop
/// (its loop reads ``requested``), a second exits at once (130). A plain handler that only touches an atomic
/// is async-signal-safe and, unlike a dispatch signal source, does not depend on which of librdkafka's
/// threads the kernel delivers the signal to.
/// The Swift runtime's crash report lists every register with the 16 bytes it points at: memory that can
/// hold a SASL password or a key passphrase. The service's report is limited to the symbolicated stack of
/// the crashed thread. The runtime reads its setting when the process starts, so `run` re-executes itself
/// once with it set (an operator's own `SWIFT_BACKTRACE` is left alone).
enum CrashReports {
    static let setting = "enable=yes,registers=none,images=none,threads=crashed,sanitize=yes,interactive=no"

    static func limitBeforeSecretsAreRead() {
        // A parent's blocked signals are inherited: a blocked SIGSEGV from a fault skips the report altogether.
        var crashSignals = sigset_t()
        sigemptyset(&crashSignals)
        for number in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP] { sigaddset(&crashSignals, number) }
        pthread_sigmask(SIG_UNBLOCK, &crashSignals, nil)
        guard getenv("SWIFT_BACKTRACE") == nil else { return }
        setenv("SWIFT_BACKTRACE", setting, 1)
        // The executable's own path (not /proc/self/exe) keeps the process and thread names.
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        if readlink("/proc/self/exe", &path, path.count - 1) > 0 { execv(path, CommandLine.unsafeArgv) }
        // Only a failed exec returns: run on, with the runtime's default report.
        unsetenv("SWIFT_BACKTRACE")
    }
}

enum StopSignals {
    /// SIGPIPE ignored (a closed socket is an error, not death), and SIGTERM/SIGINT unblocked: a parent may
    /// have started us with them blocked (the mask is inherited), and librdkafka's threads block every
    /// signal, so some thread must take them. Done before any thread starts.
    static func prepareMask(ignoringBrokenPipes: Bool = true) {
        if ignoringBrokenPipes { signal(SIGPIPE, SIG_IGN) }
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// The offline commands keep SIGPIPE's default action: `match … | head` ends as `grep … | head` does.
    static func install(ignoringBrokenPipes: Bool = true) {
        prepareMask(ignoringBrokenPipes: ignoringBrokenPipes)
        for number in [SIGTERM, SIGINT] {
            signal(number) { received in
                if pendingStopSignals.add(1, ordering: .acquiringAndReleasing).oldValue > 0 { _exit(130) }
                lastStopSignal.store(received, ordering: .releasing)
            }
        }
    }

    static var requested: Bool { pendingStopSignals.load(ordering: .acquiring) > 0 }
    static var lastName: String { lastStopSignal.load(ordering: .acquiring) == SIGINT ? "SIGINT" : "SIGTERM" }
}

/// Process-wide: signal handlers cannot capture context.
private let pendingStopSignals = Atomic<Int>(0)
private let lastStopSignal = Atomic<Int32>(0)
