# Warnings go on our own targets only, never through add_compile_options() or
# CMAKE_C_FLAGS, so a project that pulls tether in with add_subdirectory()
# keeps its own flags.

function(tether_target_warnings target)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wstrict-prototypes
      -Wmissing-prototypes -Wundef -Wcast-qual -Wpointer-arith)
    if(TETHER_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${TETHER_WERROR}>:/WX>)
  endif()
endfunction()
