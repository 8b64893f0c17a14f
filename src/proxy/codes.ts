/** Message type bytes of the PostgreSQL v3 protocol (https://www.postgresql.org/docs/current/protocol-message-formats.html). */

/** Sent by the client (frontend). */
export const enum F {
  Bind = 0x42, // B
  Close = 0x43, // C
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyFail = 0x66, // f
  Describe = 0x44, // D
  Execute = 0x45, // E
  Flush = 0x48, // H
  FunctionCall = 0x46, // F
  Parse = 0x50, // P
  Password = 0x70, // p (also SASLInitialResponse / SASLResponse)
  Query = 0x51, // Q
  Sync = 0x53, // S
  Terminate = 0x58, // X
}

/** Sent by the server (backend). */
export const enum B {
  Authentication = 0x52, // R
  BackendKeyData = 0x4b, // K
  BindComplete = 0x32, // 2
  CloseComplete = 0x33, // 3
  CommandComplete = 0x43, // C
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyInResponse = 0x47, // G
  CopyOutResponse = 0x48, // H
  CopyBothResponse = 0x57, // W
  DataRow = 0x44, // D
  EmptyQueryResponse = 0x49, // I
  ErrorResponse = 0x45, // E
  FunctionCallResponse = 0x56, // V
  NegotiateProtocolVersion = 0x76, // v
  NoData = 0x6e, // n
  NoticeResponse = 0x4e, // N
  NotificationResponse = 0x41, // A
  ParameterDescription = 0x74, // t
  ParameterStatus = 0x53, // S
  ParseComplete = 0x31, // 1
  PortalSuspended = 0x73, // s
  ReadyForQuery = 0x5a, // Z
  RowDescription = 0x54, // T
}

/** Codes of the untyped startup-phase packets. */
export const enum StartupCode {
  Protocol3 = 196608,
  CancelRequest = 80877102,
  SSLRequest = 80877103,
  GSSENCRequest = 80877104,
}

/** ReadyForQuery transaction status bytes. */
export const enum TxStatus {
  Idle = 0x49, // I
  InTransaction = 0x54, // T
  Failed = 0x45, // E
}
