import Foundation
import OCICore
import Testing

struct SystemErrorTests {
    @Test func errnoReadsAsWordsInASentence() {
        #expect(SystemError.words(ENOENT) == "no such file or directory")
        #expect(SystemError.words(ECONNREFUSED) == "connection refused")
    }

    @Test func whyAFileCannotBeReadOrWritten() throws {
        let directory = NSTemporaryDirectory() + "ferry-system-error-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/a.txt"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))

        #expect(SystemError.whyUnreadable(file) == nil)
        #expect(SystemError.whyUnreadable(directory) == "is a directory")
        #expect(SystemError.whyUnreadable("\(directory)/missing") == "no such file or directory")
        #expect(SystemError.unreadable(file) == "cannot be read")

        #expect(SystemError.notAFileToWrite(file) == nil)
        #expect(SystemError.notAFileToWrite("\(directory)/new.tar") == nil)
        #expect(
            SystemError.notAFileToWrite(directory + "/", example: "x.json")
                == "\(directory)/ is a directory: name the file to write in it (e.g. \(directory)/x.json)")
    }
}
