// `audit-sentinel healthcheck`: the container's health probe, asking a running service's HTTP endpoint.
import ArgumentParser
import Foundation

/// Exits 0 when the service answers 200 on the path, 1 otherwise, saying why in one line: what a compose
/// or Docker `HEALTHCHECK` runs inside the image, which has no curl and whose `/bin/sh` has no `/dev/tcp`.
struct Healthcheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running service's health endpoint; exit 0 if it answers 200 OK.",
        discussion: "Exit status: 0 healthy (or ready, with --path /readyz), 1 not, 2 on a bad option.")

    @Option(name: .long, help: "The endpoint's address, as http.listen (a wildcard host is asked on loopback).")
    var address: String = "127.0.0.1:9464"

    @Option(name: .long, help: "/healthz (alive) or /readyz (consuming).")
    var path: String = "/healthz"

    @Option(name: .long, help: "Seconds to wait for the answer.")
    var timeout: Double = 2

    func run() throws {
        guard var (host, port) = HTTPEndpoint.parseListen(address) else {
            printError("healthcheck: --address: expected host:port, got \(address)")
            throw ExitCode(2)
        }
        if host == "0.0.0.0" { host = "127.0.0.1" }
        if host == "::" { host = "::1" }
        switch Self.status(host: host, port: port, path: path, timeout: timeout) {
        case .success(200):
            return
        case .success(let status):
            printError("healthcheck: \(host):\(port)\(path) answered \(status)")
            throw ExitCode(1)
        case .failure(let error):
            printError("healthcheck: \(host):\(port)\(path): \(error)")
            throw ExitCode(1)
        }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// The status code of `GET path`, with the whole exchange bounded by `timeout`.
    static func status(host: String, port: Int, path: String, timeout: Double) -> Result<Int, Failure> {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let address = info else {
            return .failure(Failure(description: "\(host) is not a numeric IPv4 or IPv6 address"))
        }
        defer { freeaddrinfo(info) }
        let fd = socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(Failure(description: String(cString: strerror(errno)))) }
        defer { close(fd) }
        let deadline = Date().addingTimeInterval(timeout)
        func waitFor(_ events: Int32) -> Bool {
            var descriptor = pollfd(fd: fd, events: Int16(events), revents: 0)
            let left = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
            return poll(&descriptor, 1, left) > 0
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) != 0 {
            guard errno == EINPROGRESS, waitFor(Int32(POLLOUT)) else { return .failure(Failure(description: "connection timed out")) }
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
            if code != 0 { return .failure(Failure(description: String(cString: strerror(code)))) }
        }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            return .failure(Failure(description: "cannot send: \(String(cString: strerror(errno)))"))
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while !answer.contains(UInt8(ascii: "\n")) {
            guard waitFor(Int32(POLLIN)) else { return .failure(Failure(description: "no answer within \(timeout) s")) }
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { return .failure(Failure(description: "connection closed without an answer")) }
            answer += chunk[..<count]
        }
        let statusLine = String(decoding: answer.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/"), let status = Int(statusLine[1]) else {
            return .failure(Failure(description: "not an HTTP answer"))
        }
        return .success(status)
    }
}
