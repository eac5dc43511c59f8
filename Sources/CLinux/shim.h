// Linux system calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does
// not define: wrapped here under names of our own.
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

// copy_file_range(2): copies a file range in the kernel (a reflink where the filesystem shares
// extents). Returns the bytes copied, or -1 with errno set.
static inline long ferry_copy_file_range(int in, long long *in_offset, int out, long long *out_offset, size_t length) {
    return syscall(SYS_copy_file_range, in, in_offset, out, out_offset, length, 0u);
}

// fallocate(2) with mode 0: reserves the blocks of [offset, offset+length) and grows the file.
static inline int ferry_fallocate(int fd, long long offset, long long length) {
    return (int)syscall(SYS_fallocate, fd, 0, offset, length);
}

// sync_file_range(2) with SYNC_FILE_RANGE_WRITE: starts writeback of [offset, offset+length)
// without waiting for it, so a later fsync has little left to write.
static inline int ferry_start_writeback(int fd, long long offset, long long length) {
    return (int)syscall(SYS_sync_file_range, fd, offset, length, 2u);
}
