// The preconditioner codes (the `kind` of skip_mix): defined once, in fastdiff/_codes.py, and handed to every C++
// and CUDA compile as -DFASTDIFF_PRECOND_EDM=... by fastdiff/_build.py's compile_args. This header only names them.
#pragma once

#if !defined(FASTDIFF_PRECOND_EDM) || !defined(FASTDIFF_PRECOND_VP) || !defined(FASTDIFF_PRECOND_VE)
#error "FASTDIFF_PRECOND_EDM/VP/VE are not defined: compile with the flags of fastdiff/_build.py's compile_args"
#endif

namespace fastdiff {

enum PrecondKind { kEDM = FASTDIFF_PRECOND_EDM, kVP = FASTDIFF_PRECOND_VP, kVE = FASTDIFF_PRECOND_VE };  // iDDPM: kVP

}  // namespace fastdiff
