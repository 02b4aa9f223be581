/// Realistic Kubernetes audit events from a simulated cluster, seeded and reproducible: the corpus for
/// benchmarks, the demo's traffic, and load tests. Events are `audit.k8s.io/v1` JSON of about 1–1.5 KB
/// (Metadata level, RBAC reasons, service-account pod claims), like a busy API server writes.
public struct SyntheticAuditTraffic: Sendable {
    /// A small, fast, seeded generator (SplitMix64): the same seed gives the same traffic everywhere.
    public struct Generator: RandomNumberGenerator, Sendable {
        private var state: UInt64
        public init(seed: UInt64) { state = seed }
        public mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    public enum Kind: String, Sendable {
        /// Allowed everyday traffic: controllers, operators, kubelets, humans with kubectl.
        case normal
        /// A service account denied (`forbid`): the headline rule's match.
        case deniedServiceAccount
        /// A human or anonymous user denied: not a service account, must not match the headline rule.
        case deniedUser
    }

    public static let namespaces = ["default", "kube-system", "monitoring", "payments", "checkout", "search", "ingress-nginx",
                                    "cert-manager", "logging", "data", "ml-serving", "batch", "argocd", "istio-system", "vault", "web"]
    static let workloads = ["api", "worker", "frontend", "scheduler", "exporter", "operator", "controller", "sync", "indexer", "gateway"]
    static let humans = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "oncall@example.com"]
    static let verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    static let resources: [(String, String)] = [("pods", ""), ("secrets", ""), ("configmaps", ""), ("services", ""), ("endpoints", ""),
                                                ("deployments", "apps"), ("replicasets", "apps"), ("leases", "coordination.k8s.io"),
                                                ("events", ""), ("jobs", "batch"), ("ingresses", "networking.k8s.io"),
                                                ("roles", "rbac.authorization.k8s.io"), ("nodes", ""), ("serviceaccounts", "")]
    static let agents = ["kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/system:serviceaccount:kube-system:replicaset-controller",
                         "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46", "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
                         "prometheus/2.53.0", "argocd-application-controller/v2.12.3 (linux/amd64)", "Go-http-client/2.0",
                         "python-requests/2.32.3", "curl/8.5.0", "cert-manager-cainjector/v1.15.1 (linux/amd64) cert-manager/0f4ab12"]

    public private(set) var generator: Generator
    /// Ingest time of the next event, in milliseconds; advances by `spacing` per event.
    public var clock: Int64
    public var spacing: Int64

    public init(seed: UInt64 = 42, startMilliseconds: Int64 = 1_763_625_600_000, spacingMilliseconds: Int64 = 2) {
        generator = Generator(seed: seed)
        clock = startMilliseconds
        spacing = spacingMilliseconds
    }

    /// Picks the next event's kind: `denied` of all events are service-account denials, a tenth as many
    /// are denied humans, the rest is normal traffic.
    public mutating func nextKind(deniedFraction: Double) -> Kind {
        let draw = Double(generator.next() % 1_000_000) / 1_000_000
        if draw < deniedFraction { return .deniedServiceAccount }
        if draw < deniedFraction * 1.1 { return .deniedUser }
        return .normal
    }

    /// One event's JSON text (no trailing newline) and its ingest time.
    public mutating func next(_ kind: Kind, user fixedUser: String? = nil, namespace fixedNamespace: String? = nil,
                              verb fixedVerb: String? = nil, resource fixedResource: String? = nil,
                              sourceIP fixedIP: String? = nil, userAgent fixedAgent: String? = nil) -> (json: String, ingested: Int64) {
        clock += spacing
        let namespace = fixedNamespace ?? pick(Self.namespaces)
        let workload = pick(Self.workloads)
        let serviceAccount = "system:serviceaccount:\(namespace):\(workload)"
        let human = kind == .deniedUser || (kind == .normal && draw(0.15))
        let username = fixedUser ?? (human ? pick(Self.humans) : serviceAccount)
        let verb = fixedVerb ?? pick(Self.verbs)
        let resourcePair = fixedResource.map { name in Self.resources.first { $0.0 == name } ?? (name, "") } ?? pick(Self.resources)
        let denied = kind != .normal
        let ip = fixedIP ?? "10.\(generator.next() % 4 + 240).\(generator.next() % 256).\(generator.next() % 254 + 1)"
        let agent = fixedAgent ?? pick(Self.agents)
        let auditID = uuid()
        let podSuffix = String(generator.next() % 0xFFFFF, radix: 36)
        let name = draw(0.5) ? "\(workload)-\(podSuffix)" : ""
        let requestTime = clock - Int64(generator.next() % 40) - 5
        let received = Timestamp.rfc3339Micros(milliseconds: requestTime, micros: Int(generator.next() % 1000))
        let stage = Timestamp.rfc3339Micros(milliseconds: requestTime + Int64(generator.next() % 5) + 1, micros: Int(generator.next() % 1000))
        let apiPrefix = resourcePair.1.isEmpty ? "/api/v1" : "/apis/\(resourcePair.1)/v1"
        let uri = "\(apiPrefix)/namespaces/\(namespace)/\(resourcePair.0)" + (name.isEmpty ? "?limit=500&resourceVersion=0" : "/\(name)")
        let groups = username.hasPrefix("system:serviceaccount:")
            ? #"["system:serviceaccounts","system:serviceaccounts:\#(namespace)","system:authenticated"]"#
            : #"["oidc:platform-engineers","system:authenticated"]"#
        let extra = username.hasPrefix("system:serviceaccount:")
            ? #","extra":{"authentication.kubernetes.io/credential-id":["JTI=\#(uuid())"],"authentication.kubernetes.io/node-name":["ip-10-0-\#(generator.next() % 200)-\#(generator.next() % 250).eu-west-1.compute.internal"],"authentication.kubernetes.io/pod-name":["\#(workload)-\#(podSuffix)"],"authentication.kubernetes.io/pod-uid":["\#(uuid())"]}"#
            : ""
        let decision = denied ? "forbid" : "allow"
        let reason = denied
            ? ""
            : #"RBAC: allowed by ClusterRoleBinding \"\#(workload)-\#(namespace)\" of ClusterRole \"\#(workload)-role\" to ServiceAccount \"\#(workload)/\#(namespace)\""#
        let status = denied
            ? #"{"metadata":{},"status":"Failure","message":"\#(resourcePair.0) is forbidden: User \"\#(username)\" cannot \#(verb) resource \"\#(resourcePair.0)\" in API group \"\#(resourcePair.1)\" in the namespace \"\#(namespace)\"","reason":"Forbidden","details":{"kind":"\#(resourcePair.0)"},"code":403}"#
            : #"{"metadata":{},"code":\#(verb == "create" ? 201 : 200)}"#
        let objectRef = #"{"resource":"\#(resourcePair.0)","namespace":"\#(namespace)"\#(name.isEmpty ? "" : #","name":"\#(name)""#),"apiGroup":"\#(resourcePair.1)","apiVersion":"v1"}"#
        let json = #"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"\#(auditID)","stage":"ResponseComplete","requestURI":"\#(uri)","verb":"\#(verb)","user":{"username":"\#(username)","uid":"\#(uuid())","groups":\#(groups)\#(extra)},"sourceIPs":["\#(ip)"],"userAgent":"\#(agent)","objectRef":\#(objectRef),"responseStatus":\#(status),"requestReceivedTimestamp":"\#(received)","stageTimestamp":"\#(stage)","annotations":{"authorization.k8s.io/decision":"\#(decision)","authorization.k8s.io/reason":"\#(reason)"}}"#
        return (json, clock)
    }

    private mutating func pick<T>(_ values: [T]) -> T { values[Int(generator.next() % UInt64(values.count))] }
    private mutating func draw(_ probability: Double) -> Bool { Double(generator.next() % 10_000) < probability * 10_000 }
    private mutating func uuid() -> String {
        let hex = String(generator.next(), radix: 16).leftPadded(16) + String(generator.next(), radix: 16).leftPadded(16)
        let characters = Array(hex)
        return "\(String(characters[0..<8]))-\(String(characters[8..<12]))-4\(String(characters[13..<16]))-a\(String(characters[17..<20]))-\(String(characters[20..<32]))"
    }
}

extension Timestamp {
    /// `2025-03-04T06:22:18.819232Z`: microsecond precision, as the API server writes.
    static func rfc3339Micros(milliseconds: Int64, micros: Int) -> String {
        let text = rfc3339(milliseconds: milliseconds)
        let micro = String(micros)
        return String(text.dropLast()) + String(repeating: "0", count: 3 - micro.count) + micro + "Z"
    }
}

extension String {
    /// Zero-padded on the left to `width` characters (hex digits, timestamps).
    public func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
