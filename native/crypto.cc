// AES-XTS for the crypt bdev, through the OpenSSL inside Node itself: the node
// binary exports its EVP symbols, so the shim links no libcrypto of its own
// and uses the same one node:crypto does. A context is per thread (a reactor's
// channel makes its own); one call covers a whole request, sector by sector,
// with no allocation: node:crypto needs a cipher object per sector, which
// measured 24 µs per 4 KiB of 512-byte sectors against a few here.
#include "shim.h"

#include <openssl/evp.h>

#include <cstring>
#include <mutex>
#include <vector>

namespace vdx {

namespace {

struct Xts {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
};

std::mutex tableLock;
// id -> contexts; a freed id keeps nullptrs and is reused. Entries are copied
// out under the lock: another thread's create may grow (move) the vector. A
// context itself is used only by the thread that made it.
std::vector<Xts> table;

bool Lookup(int32_t id, Xts* out) {
  std::lock_guard<std::mutex> g(tableLock);
  if (id < 0 || static_cast<size_t>(id) >= table.size() || table[id].enc == nullptr) return false;
  *out = table[id];
  return true;
}

}  // namespace

// xtsCreate(key: Uint8Array) -> id: key of 32 bytes (aes-xts with two 128-bit
// keys, cryptsetup's --key-size 256) or 64 (256-bit keys, --key-size 512).
// Throws (EINVAL) on another length or a key OpenSSL refuses.
static Napi::Value XtsCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "xtsCreate(key: Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array key = info[0].As<Napi::Uint8Array>();
  const EVP_CIPHER* cipher = key.ByteLength() == 32 ? EVP_aes_128_xts() : key.ByteLength() == 64 ? EVP_aes_256_xts() : nullptr;
  if (cipher == nullptr) return ThrowErrno(env, EINVAL, "xtsCreate");
  Xts x;
  x.enc = EVP_CIPHER_CTX_new();
  x.dec = EVP_CIPHER_CTX_new();
  bool ok = x.enc != nullptr && x.dec != nullptr && EVP_CipherInit_ex(x.enc, cipher, nullptr, key.Data(), nullptr, 1) == 1 &&
            EVP_CipherInit_ex(x.dec, cipher, nullptr, key.Data(), nullptr, 0) == 1;
  if (!ok) {
    EVP_CIPHER_CTX_free(x.enc);
    EVP_CIPHER_CTX_free(x.dec);
    return ThrowErrno(env, EINVAL, "xtsCreate");
  }
  std::lock_guard<std::mutex> g(tableLock);
  for (size_t i = 0; i < table.size(); i++) {
    if (table[i].enc == nullptr) {
      table[i] = x;
      return Napi::Number::New(env, static_cast<double>(i));
    }
  }
  table.push_back(x);
  return Napi::Number::New(env, static_cast<double>(table.size() - 1));
}

// xtsCrypt(id, encrypt, srcAddr, dstAddr, length, sectorSize, firstIv, ivStep)
// -> 0 or -EINVAL. Each sectorSize bytes is one XTS data unit whose tweak is
// its IV as dm-crypt's plain64 makes it: a little-endian 64-bit number, firstIv
// for the first sector and ivStep more for each next. src may equal dst.
static Napi::Value XtsCrypt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t id;
  uint32_t encrypt, sectorSize, ivStep;
  size_t src, dst, len, firstIv;
  if (!ArgInt32(info, 0, &id) || !ArgUint32(info, 1, &encrypt) || !ArgSize(info, 2, &src) || !ArgSize(info, 3, &dst) ||
      !ArgSize(info, 4, &len) || !ArgUint32(info, 5, &sectorSize) || !ArgSize(info, 6, &firstIv) || !ArgUint32(info, 7, &ivStep)) {
    return env.Undefined();
  }
  Xts x;
  if (!Lookup(id, &x) || sectorSize < 16 || len % sectorSize != 0) return Napi::Number::New(env, -EINVAL);
  EVP_CIPHER_CTX* ctx = encrypt ? x.enc : x.dec;
  unsigned char iv[16];
  uint64_t n = firstIv;
  for (size_t off = 0; off < len; off += sectorSize, n += ivStep) {
    for (int b = 0; b < 8; b++) iv[b] = static_cast<unsigned char>(n >> (8 * b));
    memset(iv + 8, 0, 8);
    int outl = 0;
    if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, -1) != 1 ||
        EVP_CipherUpdate(ctx, reinterpret_cast<unsigned char*>(dst + off), &outl, reinterpret_cast<const unsigned char*>(src + off),
                         static_cast<int>(sectorSize)) != 1) {
      return Napi::Number::New(env, -EINVAL);
    }
  }
  return Napi::Number::New(env, 0);
}

// xtsFree(id): its contexts go (the key with them: OpenSSL clears it).
static Napi::Value XtsFree(const Napi::CallbackInfo& info) {
  int32_t id;
  if (!ArgInt32(info, 0, &id)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(tableLock);
  if (id >= 0 && static_cast<size_t>(id) < table.size() && table[id].enc != nullptr) {
    EVP_CIPHER_CTX_free(table[id].enc);
    EVP_CIPHER_CTX_free(table[id].dec);
    table[id] = Xts();
  }
  return info.Env().Undefined();
}

void InitCrypto(Napi::Env env, Napi::Object exports) {
  exports.Set("xtsCreate", Napi::Function::New(env, XtsCreate, "xtsCreate"));
  exports.Set("xtsCrypt", Napi::Function::New(env, XtsCrypt, "xtsCrypt"));
  exports.Set("xtsFree", Napi::Function::New(env, XtsFree, "xtsFree"));
}

}  // namespace vdx
