// A SQLite VFS over the default one that counts the fsyncs of write-ahead logs, installed as the
// default for the whole test process: what shows when a commit reaches the disk (a power loss
// cannot be staged in a test). Every other call goes to the real VFS and file unchanged.
#ifndef STRONGROOM_TESTS_SUPPORT_COUNTING_VFS_H_
#define STRONGROOM_TESTS_SUPPORT_COUNTING_VFS_H_

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace strongroom::testing {

class CountingVfs {
 public:
  // Registers the VFS as the default, once; every connection opened after uses it.
  static void Install() {
    static const bool installed = Register();
    (void)installed;
  }
  // fsyncs of write-ahead log files since the process started.
  static std::uint64_t wal_syncs() { return WalSyncs().load(); }

 private:
  struct File {
    sqlite3_file base;
    bool wal;
  };
  static_assert(sizeof(File) % 8 == 0);

  static std::atomic<std::uint64_t>& WalSyncs() {
    static std::atomic<std::uint64_t> syncs{0};
    return syncs;
  }
  static sqlite3_vfs*& Real() {
    static sqlite3_vfs* real = nullptr;
    return real;
  }
  static sqlite3_file* Inner(sqlite3_file* f) {
    return reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(File));
  }
  static const sqlite3_io_methods* InnerMethods(sqlite3_file* f) { return Inner(f)->pMethods; }

  static int Close(sqlite3_file* f) { return InnerMethods(f)->xClose(Inner(f)); }
  static int Read(sqlite3_file* f, void* b, int n, sqlite3_int64 o) {
    return InnerMethods(f)->xRead(Inner(f), b, n, o);
  }
  static int Write(sqlite3_file* f, const void* b, int n, sqlite3_int64 o) {
    return InnerMethods(f)->xWrite(Inner(f), b, n, o);
  }
  static int Truncate(sqlite3_file* f, sqlite3_int64 size) {
    return InnerMethods(f)->xTruncate(Inner(f), size);
  }
  static int Sync(sqlite3_file* f, int flags) {
    if (reinterpret_cast<File*>(f)->wal) WalSyncs().fetch_add(1);
    return InnerMethods(f)->xSync(Inner(f), flags);
  }
  static int FileSize(sqlite3_file* f, sqlite3_int64* size) {
    return InnerMethods(f)->xFileSize(Inner(f), size);
  }
  static int Lock(sqlite3_file* f, int l) { return InnerMethods(f)->xLock(Inner(f), l); }
  static int Unlock(sqlite3_file* f, int l) { return InnerMethods(f)->xUnlock(Inner(f), l); }
  static int CheckReservedLock(sqlite3_file* f, int* out) {
    return InnerMethods(f)->xCheckReservedLock(Inner(f), out);
  }
  static int FileControl(sqlite3_file* f, int op, void* arg) {
    return InnerMethods(f)->xFileControl(Inner(f), op, arg);
  }
  static int SectorSize(sqlite3_file* f) { return InnerMethods(f)->xSectorSize(Inner(f)); }
  static int DeviceCharacteristics(sqlite3_file* f) {
    return InnerMethods(f)->xDeviceCharacteristics(Inner(f));
  }
  static int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
    return InnerMethods(f)->xShmMap(Inner(f), region, size, extend, out);
  }
  static int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
    return InnerMethods(f)->xShmLock(Inner(f), offset, n, flags);
  }
  static void ShmBarrier(sqlite3_file* f) { InnerMethods(f)->xShmBarrier(Inner(f)); }
  static int ShmUnmap(sqlite3_file* f, int remove) {
    return InnerMethods(f)->xShmUnmap(Inner(f), remove);
  }
  static int Fetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
    return InnerMethods(f)->xFetch(Inner(f), offset, amount, out);
  }
  static int Unfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
    return InnerMethods(f)->xUnfetch(Inner(f), offset, p);
  }

  static const sqlite3_io_methods* Methods() {
    static const sqlite3_io_methods methods = {3,
                                               Close,
                                               Read,
                                               Write,
                                               Truncate,
                                               Sync,
                                               FileSize,
                                               Lock,
                                               Unlock,
                                               CheckReservedLock,
                                               FileControl,
                                               SectorSize,
                                               DeviceCharacteristics,
                                               ShmMap,
                                               ShmLock,
                                               ShmBarrier,
                                               ShmUnmap,
                                               Fetch,
                                               Unfetch};
    return &methods;
  }

  static int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
    File* file = reinterpret_cast<File*>(f);
    file->base.pMethods = nullptr;
    file->wal = (flags & SQLITE_OPEN_WAL) != 0;
    const int rc = Real()->xOpen(Real(), name, Inner(f), flags, out);
    if (rc == SQLITE_OK && Inner(f)->pMethods != nullptr) file->base.pMethods = Methods();
    return rc;
  }
  static int Delete(sqlite3_vfs*, const char* name, int sync) {
    return Real()->xDelete(Real(), name, sync);
  }
  static int Access(sqlite3_vfs*, const char* name, int flags, int* out) {
    return Real()->xAccess(Real(), name, flags, out);
  }
  static int FullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
    return Real()->xFullPathname(Real(), name, n, out);
  }
  static void* DlOpen(sqlite3_vfs*, const char* name) { return Real()->xDlOpen(Real(), name); }
  static void DlError(sqlite3_vfs*, int n, char* out) { Real()->xDlError(Real(), n, out); }
  static void (*DlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) {
    return Real()->xDlSym(Real(), handle, symbol);
  }
  static void DlClose(sqlite3_vfs*, void* handle) { Real()->xDlClose(Real(), handle); }
  static int Randomness(sqlite3_vfs*, int n, char* out) {
    return Real()->xRandomness(Real(), n, out);
  }
  static int Sleep(sqlite3_vfs*, int us) { return Real()->xSleep(Real(), us); }
  static int CurrentTime(sqlite3_vfs*, double* out) { return Real()->xCurrentTime(Real(), out); }
  static int GetLastError(sqlite3_vfs*, int n, char* out) {
    return Real()->xGetLastError(Real(), n, out);
  }
  static int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) {
    return Real()->xCurrentTimeInt64(Real(), out);
  }

  static bool Register() {
    Real() = sqlite3_vfs_find(nullptr);
    static sqlite3_vfs vfs;
    std::memset(&vfs, 0, sizeof vfs);
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(sizeof(File)) + Real()->szOsFile;
    vfs.mxPathname = Real()->mxPathname;
    vfs.zName = "strongroom-counting";
    vfs.xOpen = Open;
    vfs.xDelete = Delete;
    vfs.xAccess = Access;
    vfs.xFullPathname = FullPathname;
    vfs.xDlOpen = DlOpen;
    vfs.xDlError = DlError;
    vfs.xDlSym = DlSym;
    vfs.xDlClose = DlClose;
    vfs.xRandomness = Randomness;
    vfs.xSleep = Sleep;
    vfs.xCurrentTime = CurrentTime;
    vfs.xGetLastError = GetLastError;
    vfs.xCurrentTimeInt64 = CurrentTimeInt64;
    return sqlite3_vfs_register(&vfs, /*makeDflt=*/1) == SQLITE_OK;
  }
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_COUNTING_VFS_H_
