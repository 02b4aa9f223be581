// The inputs of `replay` and `match`: files, directories and standard input, read in bounded chunks, gzip
// members inflated in-process by zlib, a growing file followed like `tail -F`.
import CZlib
import Foundation

/// Why an input could not be read; every case names the path, and the command exits with status 2.
enum InputError: Error, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    case cannotRead(path: String, errno: Int32)
    case notAFile(path: String)
    case emptyDirectory(path: String)
    case badGzip(path: String, offset: Int64, reason: String)
    case truncatedGzip(path: String, offset: Int64)

    var description: String {
        switch self {
        case .cannotOpen(let path, let code): "\(path): cannot open: \(String(cString: strerror(code)))"
        case .cannotRead(let path, let code): "\(path): cannot read: \(String(cString: strerror(code)))"
        case .notAFile(let path): "\(path): not a regular file, directory or pipe"
        case .emptyDirectory(let path): "\(path): directory holds no files to read"
        case .badGzip(let path, let offset, let reason): "\(path): bad gzip data at byte \(offset): \(reason)"
        case .truncatedGzip(let path, let offset): "\(path): gzip data ends inside a member at byte \(offset) (truncated file?)"
        }
    }
}

/// The paths a user gave, resolved before anything is read: a directory stands for its files (sorted,
/// recursively, hidden ones skipped), "-" for standard input. A path that does not exist or cannot be
/// read fails here, so a command never prints half its output and then stops on a typo.
struct InputList {
    let paths: [String]

    init(_ arguments: [String]) throws(InputError) {
        var paths: [String] = []
        for argument in arguments {
            if argument == "-" { paths.append(argument); continue }
            var status = stat()
            guard stat(argument, &status) == 0 else { throw .cannotOpen(path: argument, errno: errno) }
            switch status.st_mode & S_IFMT {
            case S_IFDIR:
                let files = Self.files(under: argument)
                guard !files.isEmpty else { throw .emptyDirectory(path: argument) }
                paths += files
            case S_IFREG, S_IFIFO, S_IFCHR, S_IFSOCK:
                paths.append(argument)
            default:
                throw .notAFile(path: argument)
            }
        }
        for path in paths where path != "-" {
            guard access(path, R_OK) == 0 else { throw .cannotOpen(path: path, errno: errno) }
        }
        self.paths = paths
    }

    private static func files(under directory: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter { !$0.hasPrefix(".") }.sorted().flatMap { entry -> [String] in
            let path = (directory as NSString).appendingPathComponent(entry)
            var status = stat()
            guard stat(path, &status) == 0 else { return [path] }  // reported when opened
            switch status.st_mode & S_IFMT {
            case S_IFDIR: return files(under: path)
            case S_IFREG: return [path]
            default: return []
            }
        }
    }

    /// Whether `path` is the file behind `fd` (output redirected into an input, or into a directory being
    /// read): reading it would feed the command its own results without end, so it is refused, as grep does.
    static func isSameFile(_ path: String, as fd: Int32) -> Bool {
        var output = stat()
        var input = stat()
        guard path != "-", fstat(fd, &output) == 0, output.st_mode & S_IFMT == S_IFREG, stat(path, &input) == 0 else { return false }
        return input.st_dev == output.st_dev && input.st_ino == output.st_ino
    }

    /// One record as the commands see it, valid only during the call that receives it.
    struct Record {
        var bytes: UnsafeRawBufferPointer
        /// The input's path as given ("-" for standard input), its name in messages, the record's line.
        var path: String
        var name: String
        var line: Int
        /// Raw bytes taken from the inputs so far (compressed bytes for gzip), for the progress line.
        var bytesRead: Int64
    }

    /// Reads the inputs in order and hands over their records. What cannot be read is said on standard
    /// error in one line and skipped, the rest still read: an input that is the output (`outputFD`), one
    /// that cannot be opened or read, a record over `maxRecordBytes`. Ends early on a stop signal.
    /// - Returns: whether an input failed (exit status 2), and how many records were too large.
    func readRecords(follow: Bool, maxRecordBytes: Int, outputFD: Int32, whileWaiting: () -> Void,
                     afterEachInput: () -> Void = {}, _ body: (Record) -> Void) -> (inputFailed: Bool, oversized: Int) {
        var inputFailed = false
        var oversized = 0
        var bytesOfEarlierInputs: Int64 = 0
        for path in paths {
            if Self.isSameFile(path, as: outputFD) {
                printError("\(path): input file is also the output; skipped")
                inputFailed = true
                continue
            }
            var source: InputSource?
            do throws(InputError) {
                let reader = RecordReader(source: try InputSource(path: path, follow: follow), maxRecordBytes: maxRecordBytes)
                source = reader.source
                let name = reader.source.name
                try reader.forEach(whileWaiting: whileWaiting) { framed in
                    switch framed {
                    case .oversized(let line, let bytes):
                        oversized += 1
                        printError("\(name):\(line): too_large: a record of at least \(bytes) bytes exceeds --max-record-bytes \(maxRecordBytes); skipped")
                    case .record(let bytes, let line):
                        body(Record(bytes: bytes, path: path, name: name, line: line, bytesRead: bytesOfEarlierInputs + reader.source.rawBytesRead))
                    }
                }
            } catch {
                inputFailed = true
                printError("\(error)")
            }
            bytesOfEarlierInputs += source?.rawBytesRead ?? 0
            afterEachInput()
            if StopSignals.requested { break }
        }
        return (inputFailed, oversized)
    }

    /// Bytes of the regular files among the inputs (compressed size for gzip), nil when one is a pipe:
    /// the denominator of the progress line.
    var totalBytes: Int64? {
        var total: Int64 = 0
        for path in paths {
            var status = stat()
            guard path != "-", stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
            total += Int64(status.st_size)
        }
        return total
    }
}

/// One input opened for reading: a file, a pipe or standard input, plain or gzip (recognized by its magic
/// bytes, not its name). `read` fills a caller's buffer with decompressed bytes and returns 0 at the end.
///
/// Reads never wait without looking up: a pipe is polled every 200 ms so that a stop signal ends the
/// command, and `whileWaiting` runs before the first wait (the commands flush their output there, so a
/// result is written while its input pipe stays open).
final class InputSource {
    /// The name errors and alerts cite: the path, or `<stdin>`.
    let name: String
    private let path: String?
    private var fd: Int32
    private var isRegularFile: Bool
    private let follow: Bool
    /// Bytes taken from the file (compressed bytes for gzip): the progress line's numerator.
    private(set) var rawBytesRead: Int64 = 0
    private var position: Int64 = 0
    private var inode: ino_t = 0
    private var gzip: GzipInflater?
    /// Raw bytes read but not handed out yet (the first chunk, read to look for gzip's magic bytes).
    private var pending: [UInt8] = []
    private var sniffed = false

    init(path: String, follow: Bool) throws(InputError) {
        self.follow = follow
        if path == "-" {
            name = "<stdin>"
            self.path = nil
            fd = STDIN_FILENO
        } else {
            name = path
            self.path = path
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        }
        var status = stat()
        fstat(fd, &status)
        isRegularFile = status.st_mode & S_IFMT == S_IFREG
        inode = status.st_ino
    }

    deinit {
        if fd != STDIN_FILENO { close(fd) }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, whileWaiting: () -> Void) throws(InputError) -> Int {
        if !sniffed {
            sniffed = true
            // Two bytes at least (a pipe may deliver one): gzip's magic number.
            let first = UnsafeMutableRawBufferPointer.allocate(byteCount: GzipInflater.inputChunk, alignment: 16)
            defer { first.deallocate() }
            var count = 0
            repeat {
                let got = try readRaw(into: UnsafeMutableRawBufferPointer(rebasing: first[count...]), whileWaiting: whileWaiting)
                if got == 0 { break }
                count += got
            } while count < 2
            pending = Array(first[..<count])
            if pending.count >= 2, pending[0] == 0x1F, pending[1] == 0x8B {
                gzip = try GzipInflater(name: name)
            }
        }
        if let gzip {
            return try gzip.inflate(into: buffer) { (raw) throws(InputError) in
                if !pending.isEmpty { return take(pending: raw) }
                return try readRaw(into: raw, whileWaiting: whileWaiting)
            }
        }
        if !pending.isEmpty { return take(pending: buffer) }
        return try readRaw(into: buffer, whileWaiting: whileWaiting)
    }

    private func take(pending destination: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(destination.count, pending.count)
        pending.withUnsafeBytes { destination.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
        pending.removeFirst(count)
        return count
    }

    /// Raw bytes from the descriptor; 0 at the end (for a followed file: only once a stop is requested).
    private func readRaw(into buffer: UnsafeMutableRawBufferPointer, whileWaiting: () -> Void) throws(InputError) -> Int {
        var waited = false
        while true {
            if !isRegularFile {
                // A pipe or terminal: wait for data in slices, so a stop signal is seen within 200 ms.
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, 0)
                if ready == 0 {
                    if !waited { whileWaiting(); waited = true }
                    if StopSignals.requested { return 0 }
                    _ = poll(&descriptor, 1, 200)
                    continue
                }
            }
            let count = Foundation.read(fd, buffer.baseAddress, buffer.count)
            if count > 0 {
                rawBytesRead += Int64(count)
                position += Int64(count)
                return count
            }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { if StopSignals.requested { return 0 }; continue }
                throw .cannotRead(path: name, errno: errno)
            }
            // The end of the file: done, unless following it.
            guard follow, isRegularFile, let path else { return 0 }
            if !waited { whileWaiting(); waited = true }
            if StopSignals.requested { return 0 }
            usleep(200_000)
            try reopenIfRotated(path)
        }
    }

    /// `tail -F`: a file truncated in place is read again from its start; a file replaced at its path
    /// (logrotate's rename and create) is reopened once the old one has been read to its end.
    private func reopenIfRotated(_ path: String) throws(InputError) {
        var current = stat()
        fstat(fd, &current)
        if Int64(current.st_size) < position {
            printError("\(name): file truncated; reading it from its start")
            lseek(fd, 0, SEEK_SET)
            position = 0
            return
        }
        var atPath = stat()
        guard stat(path, &atPath) == 0, atPath.st_ino != inode, Int64(current.st_size) == position else { return }
        let reopened = open(path, O_RDONLY | O_CLOEXEC)
        guard reopened >= 0 else { return }  // mid-rotation: try again on the next wait
        close(fd)
        fd = reopened
        inode = atPath.st_ino
        position = 0
        printError("\(name): file replaced; following the new one")
    }
}

/// Streaming gzip decompression (RFC 1952) through zlib, member after member: `logrotate` and cloud exports
/// concatenate members, and `gzip -d` reads them as one stream.
final class GzipInflater {
    static let inputChunk = 256 << 10
    private let name: String
    private var stream = z_stream()
    private var input: UnsafeMutableRawBufferPointer
    /// Compressed bytes consumed before `input`'s current contents: errors cite the file's byte offset.
    private var inputOffset: Int64 = 0
    private var inputCount = 0
    private var atMemberStart = true
    private var sawEnd = false

    init(name: String) throws(InputError) {
        self.name = name
        input = .allocate(byteCount: Self.inputChunk, alignment: 16)
        // 16 + MAX_WBITS: a gzip wrapper, a window of up to 32 KB.
        let status = inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw .badGzip(path: name, offset: 0, reason: "zlib could not start (status \(status))") }
    }

    deinit {
        inflateEnd(&stream)
        input.deallocate()
    }

    private var consumedOffset: Int64 { inputOffset + Int64(inputCount - Int(stream.avail_in)) }

    /// Fills `output` with decompressed bytes; 0 at the end of the compressed input.
    func inflate(into output: UnsafeMutableRawBufferPointer,
                 readRaw: (UnsafeMutableRawBufferPointer) throws(InputError) -> Int) throws(InputError) -> Int {
        guard !sawEnd else { return 0 }
        stream.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(output.count)
        while stream.avail_out > 0 {
            if stream.avail_in == 0 {
                // Hand out what is inflated before reading on: the next read may wait on a pipe.
                if Int(stream.avail_out) < output.count { break }
                inputOffset += Int64(inputCount)
                inputCount = try readRaw(input)
                if inputCount == 0 {
                    sawEnd = true
                    // A stop while a pipe or followed file was still open is no truncation.
                    if !atMemberStart && !StopSignals.requested { throw .truncatedGzip(path: name, offset: inputOffset) }
                    break
                }
                stream.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.avail_in = uInt(inputCount)
            }
            if atMemberStart {
                // Between members: padding of zero bytes is allowed at the end (some tools write it);
                // anything else must be the next member's header.
                let next = UnsafeRawBufferPointer(start: stream.next_in, count: Int(stream.avail_in))
                if next[0] == 0, next.allSatisfy({ $0 == 0 }) {
                    stream.next_in += Int(stream.avail_in)
                    stream.avail_in = 0
                    continue
                }
                atMemberStart = false
            }
            let status = CZlib.inflate(&stream, Z_NO_FLUSH)
            switch status {
            case Z_OK, Z_BUF_ERROR:
                continue
            case Z_STREAM_END:
                inflateReset(&stream)
                atMemberStart = true
            default:
                let reason = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
                sawEnd = true
                throw .badGzip(path: name, offset: consumedOffset, reason: reason)
            }
        }
        return output.count - Int(stream.avail_out)
    }
}
