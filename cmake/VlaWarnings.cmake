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
    endif()
  endif()
  target_link_libraries(${target} PRIVATE vla::vla)
endfunction()
