// The gRPC suite again, with servers that bind their calls through wrapService alone: no serverInterceptor.
import { useServerBinding } from './support/grpc.ts';

useServerBinding('wrapService');
await import('./grpc.test.ts');
