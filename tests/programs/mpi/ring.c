/* An MPI job for the restart tests (tests/runtimes.rs): 4 ranks pass a token around a
 * ring 200 times (rank 0 prints each round), then MPI_Allreduce and "done SUM". Its
 * output depends on nothing but the MPI implementation being correct. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long token = 0;
    for (int round = 1; round <= 200; round++) {
        if (rank == 0) {
            token += round;
            MPI_Send(&token, 1, MPI_LONG, 1 % size, 0, MPI_COMM_WORLD);
            MPI_Recv(&token, 1, MPI_LONG, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            printf("round %d token %ld\n", round, token);
            fflush(stdout);
        } else {
            MPI_Recv(&token, 1, MPI_LONG, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token += rank;
            MPI_Send(&token, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
        }
        usleep(20000);
    }
    long sum = 0;
    MPI_Allreduce(&token, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) { printf("done %ld\n", sum); fflush(stdout); }
    MPI_Finalize();
    return 0;
}
