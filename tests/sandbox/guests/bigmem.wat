;; Declares a 64 MiB initial memory: instantiation must be refused under a smaller cap.
(module
  (memory (export "memory") 1024)
  (func (export "_start")))
