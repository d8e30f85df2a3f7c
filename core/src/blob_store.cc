#include "blob_store.h"

#include "directory_blob_store.h"

namespace strongroom::core::internal {

Result<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& location,
                                                 std::uint64_t max_file_bytes) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<DirectoryBlobStore> store,
                      DirectoryBlobStore::Open(location, max_file_bytes));
  return std::unique_ptr<BlobStore>(std::move(store));
}

}  // namespace strongroom::core::internal
