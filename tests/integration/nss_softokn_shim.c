/* Test helper: NSS softoken as a PKCS#11 module python-pkcs11 can load.
 *
 * python-pkcs11 calls C_Initialize(NULL), and NSS softoken refuses that (it needs its
 * library parameters, an NSS extension of CK_C_INITIALIZE_ARGS). This module forwards every
 * function to libsoftokn3 (NSS_SHIM_SOFTOKN) and only replaces C_Initialize with one that
 * passes NSS_SHIM_PARAMS. tests/integration/test_hsm_des3_wrap.py builds it with gcc to run
 * the hsm_des3_wrap test on a token whose C_WrapKey takes CKM_DES3_ECB. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <nss/pkcs11.h>

typedef struct {
    CK_CREATEMUTEX CreateMutex;
    CK_DESTROYMUTEX DestroyMutex;
    CK_LOCKMUTEX LockMutex;
    CK_UNLOCKMUTEX UnlockMutex;
    CK_FLAGS flags;
    CK_CHAR_PTR *LibraryParameters;
    CK_VOID_PTR pReserved;
} NssInitArgs;

static CK_FUNCTION_LIST shim_list;
static CK_C_Initialize real_initialize;

static CK_RV shim_initialize(CK_VOID_PTR ignored) {
    (void)ignored;
    static NssInitArgs args;
    const char *params = getenv("NSS_SHIM_PARAMS");
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    args.LibraryParameters = (CK_CHAR_PTR *)params;
    return real_initialize(&args);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
    const char *path = getenv("NSS_SHIM_SOFTOKN");
    void *lib = dlopen(path ? path : "libsoftokn3.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return CKR_GENERAL_ERROR;
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "NSC_GetFunctionList");
    if (!get) get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR real;
    CK_RV rv = get(&real);
    if (rv != CKR_OK) return rv;
    shim_list = *real;
    real_initialize = real->C_Initialize;
    shim_list.C_Initialize = shim_initialize;
    *out = &shim_list;
    return CKR_OK;
}
