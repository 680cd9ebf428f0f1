# vla_target_defaults(target): warnings on for vla's own tests, benches and examples; the
# library's headers are included as ordinary (non-system) headers there, so a warning in them shows.
function(vla_target_defaults target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow>)
    if(VLA_WERROR)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
    endif()
    if(VLA_NATIVE)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
      if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # Let GCC use full 512-bit vectors where the CPU has them (it prefers 256 by default).
        target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-mprefer-vector-width=512>)
      endif()
      # GCC 12 reports false "maybe-uninitialized" inside its own AVX-512 intrinsics headers when
      # Eigen vectorises for AVX-512 (GCC bug 105593); they are not in vla or Eigen code.
      if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-maybe-uninitialized>)
      endif()
    endif()
  endif()
  if(VLA_SANITIZE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${VLA_SANITIZE} -fno-omit-frame-pointer
                           -fno-sanitize-recover=all>)
    target_link_options(${target} PRIVATE -fsanitize=${VLA_SANITIZE})
  endif()
  target_link_libraries(${target} PRIVATE vla::vla)
endfunction()
