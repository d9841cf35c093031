;; An infinite loop: must end with TIMEOUT.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
